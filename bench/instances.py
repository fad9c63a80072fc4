"""Schema test-data generation over the dev corpora: are generated instances right, and what do they cover?

    python bench/instances.py --data ../shared/corpora/maskbench [--limit N] [-n 100] [--timeout S]

For every schema the compiler accepts (`constrained.instances.InstanceGenerator`), `-n` valid instances are
drawn by random walks over the compiled automaton and must all validate with `jsonschema`; `-n` near-miss
invalid instances are derived from them and must all fail `jsonschema` with errors of the one keyword they
claim, and must be refused by the compiled automaton (compact serialization). Any failure is a mismatch
(a compiler soundness bug, or a generator bug). Schemas the compiler rejects are skipped; a schema whose
generation raises or exceeds `--timeout` seconds counts as a generation error. `--limit N` reads at most N
schemas per file. The last line is `instances: schemas=N valid_ok=... invalid_ok=... mismatches=0`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))  # `python bench/instances.py`: the project root first, for project imports

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

from constrained.instances import InstanceGenerator  # noqa: E402
from grammars import SchemaError  # noqa: E402


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout()


def _records(data: Path, limit: int | None):
    files = sorted(data.glob("*.jsonl")) if data.is_dir() else [data]
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for i, line in enumerate(handle):
                if limit is not None and i >= limit:
                    break
                if line.strip():
                    yield path.stem, json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="folder of .jsonl files (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="schemas per file")
    parser.add_argument("-n", type=int, default=100, help="valid (and invalid) instances per schema")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per schema")
    parser.add_argument("--verbose", action="store_true", help="print every mismatch")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGALRM, _alarm)

    totals = Counter()
    cov_totals = Counter()
    keywords = Counter()
    mismatch_ids: list[str] = []
    error_ids: list[str] = []
    per_file: dict[str, Counter] = {}
    start = time.perf_counter()
    for data in args.data:
        for subset, record in _records(Path(data), args.limit):
            rid = record.get("id", "?")
            stats = per_file.setdefault(subset, Counter())
            stats["seen"] += 1
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                try:
                    gen = InstanceGenerator(record["schema"])
                except (SchemaError, RecursionError):
                    stats["rejected"] += 1
                    continue
                except Exception:  # automaton / regex limits: the compiler's business, not ours
                    stats["rejected"] += 1
                    continue
                valid = gen.valid(args.n, seed=args.seed)
                invalid = gen.invalid(args.n, seed=args.seed, valid=valid)
                cov = gen.coverage(valid).summary()
            except _Timeout:
                stats["gen_errors"] += 1
                error_ids.append(f"{rid} (timeout)")
                continue
            except Exception as exc:
                stats["gen_errors"] += 1
                error_ids.append(f"{rid} ({type(exc).__name__}: {exc})"[:200])
                continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            stats["schemas"] += 1
            bad = 0
            for inst in valid:
                if inst.valid:
                    stats["valid_ok"] += 1
                else:
                    bad += 1
                    if args.verbose:
                        print(f"VALID-REJECTED {rid}: {inst.text[:300]}")
            for miss in invalid:
                verdict = gen.check_near_miss(miss.value)
                if verdict is not None and verdict[0] == miss.violates and not gen.accepts(miss.text):
                    stats["invalid_ok"] += 1
                    keywords[miss.violates] += 1
                else:
                    bad += 1
                    if args.verbose:
                        print(f"INVALID-ACCEPTED {rid} ({miss.violates} {miss.pointer}): {miss.text[:300]}")
            stats["valid"] += len(valid)
            stats["invalid"] += len(invalid)
            stats["mismatches"] += bad
            stats["no_invalid"] += not invalid
            if bad:
                mismatch_ids.append(rid)
            cov_totals.update(cov)
    for subset, stats in per_file.items():
        print(
            f"{subset:16s} seen={stats['seen']} rejected={stats['rejected']} schemas={stats['schemas']} "
            f"gen_errors={stats['gen_errors']} valid_ok={stats['valid_ok']}/{stats['valid']} "
            f"invalid_ok={stats['invalid_ok']}/{stats['invalid']} no_invalid={stats['no_invalid']} "
            f"mismatches={stats['mismatches']}"
        )
        totals.update(stats)
    print(
        "coverage: "
        + " ".join(f"{k}={cov_totals[k]}" for k in ("instances", "pointers_hit"))
        + f" branches={cov_totals['branches_hit']}/{cov_totals['branches_total']}"
        + f" enum_values={cov_totals['enum_values_hit']}/{cov_totals['enum_values_total']}"
        + f" optional_both={cov_totals['optional_both']}/{cov_totals['optional_total']}"
    )
    print("violated keywords: " + " ".join(f"{k}={v}" for k, v in keywords.most_common()))
    if mismatch_ids:
        print("mismatch ids: " + " ".join(mismatch_ids[:30]))
    if error_ids:
        print("generation errors: " + " | ".join(error_ids[:10]))
    print(f"seconds={time.perf_counter() - start:.1f}")
    print(
        f"instances: schemas={totals['schemas']} valid_ok={totals['valid_ok']} "
        f"invalid_ok={totals['invalid_ok']} mismatches={totals['mismatches']}"
    )
    return 1 if totals["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
