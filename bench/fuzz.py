"""Schema fuzzer: hostile schemas never crash the compiler, never overrun the deadline, never let through an
invalid instance.

    python bench/fuzz.py --n 10000 [--seed 0] [--deadline 5] [--instances 3] [--enum-max 20000]
        [--data ../shared/corpora/maskbench --corpus-seeds 20] [--dump DIR]

Each schema is a seed (built-in, plus the first `--corpus-seeds` schemas of each MaskBench file given) with
1-3 mutations (`bench/fuzz_schemas.py`). It is judged in a worker process killed past `--deadline` seconds:
compile must succeed or raise `SchemaError` (`GrammarError` for the automaton). When it compiles and the
meta-schema accepts it, up to `--instances` instances from hypothesis-jsonschema (an independent generator)
that `jsonschema` validates must be accepted, or are counted in `valid_refused` (property order and number
spelling are documented restrictions), and near misses of them that `jsonschema` rejects must be refused.
The last line: `fuzz: schemas=N crashes=C over_deadline=D valid_refused=V invalid_accepted=I ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))  # `python bench/fuzz.py` runs with bench/ on sys.path

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

import hypothesis  # noqa: E402
from hypothesis import given, settings  # noqa: E402

from bench.fuzz_schemas import SEEDS, SETTINGS, CompileWorker, compact, fuzzed_schemas  # noqa: E402


def corpus_seeds(folders: list[str], per_file: int) -> list[Any]:
    """The first `per_file` schemas of each MaskBench `.jsonl` file in `folders`."""
    seeds = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*.jsonl")):
            with path.open(encoding="utf-8") as fh:
                for _, line in zip(range(per_file), fh, strict=False):
                    seeds.append(json.loads(line)["schema"])
    return seeds


def signature_of(detail: str) -> str:
    """A problem's signature: the last line of its detail (the exception, for a crash)."""
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


class Fuzzer:
    """Counts outcomes over many schemas; keeps a few examples of each problem."""

    def __init__(self, deadline: float, instances: int, dump: Path | None = None) -> None:
        self.worker = CompileWorker()
        self.dump = dump
        self.deadline = deadline
        self.instances = instances
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.pending: list[Any] = []  # compiled schemas whose instances are checked after generation
        self.signatures: Counter[str] = Counter()

    def note(self, kind: str, schema: Any, detail: str) -> None:
        """Count a problem; keep one example per distinct signature (the detail's last line)."""
        self.counts[kind] += 1
        signature = f"{kind}: {signature_of(detail)}"
        self.signatures[signature] += 1
        if self.dump is not None:
            self.dump.mkdir(parents=True, exist_ok=True)
            path = self.dump / f"{kind}-{self.counts[kind]}.json"
            path.write_text(
                json.dumps({"schema": schema, "detail": detail}, ensure_ascii=True), encoding="utf-8"
            )
        shown = self.examples.setdefault(kind, [])
        if self.signatures[signature] == 1 and len(shown) < 10:
            text = (compact(schema) or repr(schema)).encode("utf-8", "backslashreplace").decode()
            shown.append(f"[{signature}] {text[:300]}\n      {detail.strip()[-600:]}")

    def run_one(self, schema: Any) -> None:
        """Judge the compile; keep compiled, meta-valid schemas for `check_instances`."""
        self.counts["schemas"] += 1
        if self.counts["schemas"] % 500 == 0:
            print(f"  {self.summary()}", file=sys.stderr, flush=True)
        outcome = self.worker.check(schema, [], self.deadline)
        self.counts["meta_invalid"] += not outcome.meta_valid
        if outcome.kind in ("crash", "over_deadline"):
            self.note({"crash": "crashes"}.get(outcome.kind, outcome.kind), schema, outcome.detail)
            return
        self.counts[outcome.kind] += 1
        if outcome.kind == "compiled" and outcome.meta_valid and self.instances:
            self.pending.append(schema)

    def check_instances(self, schema: Any, seed: int) -> None:
        drawn = self.worker.instances(schema, self.instances, seed, 6 * self.deadline)
        if drawn is None:  # hypothesis-jsonschema took too long (or failed): no instances, no verdict
            self.counts["instances_skipped"] += 1
            return
        valid, invalid = drawn
        if not valid and not invalid:
            return
        outcome = self.worker.check(schema, valid + invalid, self.deadline)
        if outcome.kind != "compiled":
            self.note({"crash": "crashes"}.get(outcome.kind, outcome.kind), schema, outcome.detail)
            return
        self.counts["valid_instances"] += len(valid)
        self.counts["invalid_instances"] += len(invalid)
        for text, accepted in zip(valid + invalid, outcome.accepted, strict=True):
            if text in valid and not accepted:
                self.counts["valid_refused"] += 1
            elif text in invalid and accepted:
                self.note("invalid_accepted", schema, f"accepted {text[:200]}")

    def summary(self) -> str:
        c = self.counts
        return (
            f"fuzz: schemas={c['schemas']} crashes={c['crashes']} over_deadline={c['over_deadline']} "
            f"valid_refused={c['valid_refused']} invalid_accepted={c['invalid_accepted']} "
            f"compiled={c['compiled']} refused={c['refused']} meta_invalid={c['meta_invalid']} "
            f"valid_instances={c['valid_instances']} invalid_instances={c['invalid_instances']} "
            f"instances_skipped={c['instances_skipped']}"
        )


def fuzz(fuzzer: Fuzzer, seeds: list[Any], n: int, seed: int, enum_max: int) -> None:
    """Judge `n` generated schemas (generation only: counting, not shrinking), then their instances."""

    @hypothesis.seed(seed)
    @settings(**SETTINGS, max_examples=n)
    @given(fuzzed_schemas(seeds, enum_max))
    def one(schema: Any) -> None:
        fuzzer.run_one(schema)

    one()
    pending, fuzzer.pending = fuzzer.pending, []
    for i, schema in enumerate(pending):
        fuzzer.check_instances(schema, seed + i)
        if i % 200 == 199:
            print(
                f"  instances of {i + 1}/{len(pending)} compiled schemas checked", file=sys.stderr, flush=True
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="schemas to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=5.0, help="seconds per schema (compile + checks)")
    parser.add_argument("--instances", type=int, default=3, help="hypothesis-jsonschema instances per schema")
    parser.add_argument("--enum-max", type=int, default=20_000, help="largest enum generated")
    parser.add_argument("--data", action="append", default=[], help="MaskBench folder: more seed schemas")
    parser.add_argument("--corpus-seeds", type=int, default=20, help="seed schemas per MaskBench file")
    parser.add_argument("--dump", type=Path, help="folder: every problem's whole schema, one JSON file each")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=hypothesis.errors.HypothesisWarning)  # large reprs of seeds
    seeds = SEEDS + corpus_seeds(args.data, args.corpus_seeds)
    fuzzer = Fuzzer(args.deadline, args.instances, args.dump)
    start = time.perf_counter()
    try:
        fuzz(fuzzer, seeds, args.n, args.seed, args.enum_max)
    finally:
        fuzzer.worker.close()
    for kind, shown in sorted(fuzzer.examples.items()):
        print(f"--- {kind}: {fuzzer.counts[kind]}, one example per signature:")
        for line in shown:
            print(f"    {line}")
    for signature, count in fuzzer.signatures.most_common():
        print(f"{count:6d}  {signature}")
    print(f"seeds={len(seeds)} seconds={time.perf_counter() - start:.0f}")
    print(fuzzer.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
