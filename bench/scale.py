"""Scale: how compile, first-mask and per-mask time grow with the schema, one axis at a time (issue 13).

    python bench/scale.py --data DIR --tokenizer smollm2 [--engines ours,llguidance,xgrammar] \
        [--timeout S] [--families enum,recursive] [--max-size N]

DIR holds the `<family>.jsonl` files of `../shared/corpora/scale/make_scale.py` (MaskBench records plus
`family` and `size`); without `--data`, or when DIR has no `.jsonl` file, they are generated into a temporary
folder first. Families: defs, recursive, nested, wide, enum, anyof, json_any (see make_scale.py);
`--max-size N` keeps the members of size ≤ N.

For every schema each engine, in turn and in its own single-threaded process (engines alternate schema by
schema, as in bench/masks.py):
- the "time" job: cold compile + matcher + first mask (TTFM), then every mask along the valid instances
  (TBM p50/p99; the instance serialized compactly and tokenized once, all engines get the same ids).
  A TTFM under 1 s is the median of `--repeat` (default 3) cold runs: single runs of a few ms are noisy on
  a busy machine, and the first compile of a family warms per-process caches the later ones find;
- the "check" job: every valid instance accepted token by token and able to end there, every invalid one
  refused (bench/conformance.py's rule). `passing` = compiled and every instance judged right.
Each job has `--timeout` seconds (default 60); a timeout counts as not compiled and restarts the process.
For ours the grammar size is printed too: characters in all the rules of its rule grammar (IR).

One table per engine, then per engine `ENGINE: compiled=X/Y passing=P/Y ttfm_growth=G`, ours last, where G is
the largest, over the families whose smallest and largest members both compiled, of
(TTFM largest / TTFM smallest) / (schema size largest / schema size smallest), schema size being the
characters of `json.dumps(schema)`. G ≤ 1: compile + first mask grow at most linearly with the schema.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# `python bench/NAME.py` runs with bench/ on sys.path: put the project root first for `bench.*` imports.
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.engines import (  # noqa: E402
    EngineWorker,
    JobTimeout,
    SchemaCase,
    load_corpus,
    parse_engines,
    resolve_data_dir,
    tokenize_cases,
)
from bench.vocabularies import load_tokenizer  # noqa: E402

MAKE_SCALE = _ROOT.parent / "shared" / "corpora" / "scale" / "make_scale.py"
REPEAT_BELOW_US = 1e6  # TTFMs under 1 s are measured `--repeat` times (median)


@dataclass
class Member:
    """One scale schema: its MaskBench case plus the family and size it was generated for."""

    case: SchemaCase
    family: str
    size: int
    chars: int  # len(json.dumps(schema))


@dataclass
class Row:
    """One engine on one schema."""

    compiled: str = "-"  # yes / timeout / crash / the unsupported keyword
    message: str = ""
    passing: bool = False
    valid_refused: int = 0
    invalid_accepted: int = 0
    ttfm: float | None = None  # µs
    tbm: list[float] = field(default_factory=list)  # µs
    grammar_chars: int | None = None  # ours: characters in all rules of its rule grammar


# ---------------------------------------------------------------------------------------------- data
def generate(out: Path) -> None:
    if not MAKE_SCALE.is_file():
        raise SystemExit(f"no .jsonl scale data and no generator at {MAKE_SCALE}")
    venv_python = _ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    print(f"scale: generating the schemas into {out} ({MAKE_SCALE.name})", file=sys.stderr, flush=True)
    subprocess.run([python, str(MAKE_SCALE), str(out)], check=True, stdout=subprocess.DEVNULL)


def family_sizes(folder: Path) -> dict[str, tuple[str, int]]:
    """Record id -> (family, size), read from the records' own `family`/`size` fields."""
    found: dict[str, tuple[str, int]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 is data
        for number, record in enumerate(json.loads(line) for line in lines if line.strip()):
            case_id = str(record.get("id", f"{path.stem}:{number}"))  # as load_corpus names it
            found[case_id] = (str(record.get("family", path.stem)), int(record.get("size", number)))
    return found


def load_members(folder: Path, families: list[str] | None, max_size: int | None) -> list[Member]:
    where = family_sizes(folder)
    members = []
    for case in load_corpus(folder).cases:
        family, size = where.get(case.id, ("?", 0))
        if families is not None and family not in families:
            continue
        if max_size is not None and size > max_size:
            continue
        members.append(Member(case, family, size, len(json.dumps(case.schema))))
    members.sort(key=lambda m: (m.family, m.size))
    return members


# ---------------------------------------------------------------------------------------------- running
def grammar_chars(schema) -> int | None:
    """Characters in all the rules of ours' rule grammar (the same compile GrammarCompiler does)."""
    import grammars

    try:
        return grammars.compile_json_schema(schema).grammar.size
    except grammars.SchemaError:
        return None


def measure(worker: EngineWorker, member: Member, timeout: float, repeat: int) -> Row:
    row = Row()
    case = member.case
    valid = [inst.token_ids for inst in case.instances if inst.valid]
    try:
        timed = worker.call("time", (case.schema, valid, False), timeout)
    except JobTimeout:
        timed = {"compile_error": "timeout", "message": f"time job over {timeout:.0f} s"}
    error = timed["compile_error"]
    if error is not None:
        keyword = timed.get("keyword") or ""
        row.compiled = error if error != "unsupported" else (keyword or "unsupported")
        row.message = timed.get("message", "")
        return row
    row.compiled = "yes"
    row.tbm = timed["tbm_us"]
    ttfms = [timed["ttfm_us"]]
    # Short TTFMs are noisy (and the first compile in a family warms per-process caches): take the median
    # of `repeat` cold runs when the first took under REPEAT_BELOW_US.
    while len(ttfms) < repeat and ttfms[0] < REPEAT_BELOW_US:
        try:
            again = worker.call("time", (case.schema, [], False), timeout)
        except JobTimeout:
            break
        if again["compile_error"] is not None:
            break
        ttfms.append(again["ttfm_us"])
    row.ttfm = float(np.median(ttfms))
    jobs = [(inst.token_ids, inst.valid) for inst in case.instances]
    try:
        checked = worker.call("check", (case.schema, jobs), timeout)
    except JobTimeout:
        checked = {"compile_error": "timeout", "message": f"check job over {timeout:.0f} s"}
    if checked["compile_error"] is not None:
        row.message = f"check: {checked['compile_error']} {checked.get('message', '')}"
        return row
    for inst, accepted in zip(case.instances, checked["accepted"], strict=True):
        if accepted != inst.valid:
            if inst.valid:
                row.valid_refused += 1
            else:
                row.invalid_accepted += 1
    row.passing = row.valid_refused == 0 and row.invalid_accepted == 0
    if not row.passing:
        row.message = f"{row.valid_refused} valid refused, {row.invalid_accepted} invalid accepted"
    return row


# ---------------------------------------------------------------------------------------------- report
def _p(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _fmt(value: float | None) -> str:
    if value is None or value != value:  # None or nan
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def growth(members: list[Member], rows: list[Row]) -> dict[str, float]:
    """Per family: (TTFM ratio largest/smallest member) / (schema-size ratio), when both compiled."""
    by_family: dict[str, list[tuple[Member, Row]]] = {}
    for member, row in zip(members, rows, strict=True):
        by_family.setdefault(member.family, []).append((member, row))
    found = {}
    for family, pairs in by_family.items():
        pairs.sort(key=lambda p: p[0].size)
        (small, s_row), (large, l_row) = pairs[0], pairs[-1]
        if small is large or s_row.ttfm is None or l_row.ttfm is None:
            continue
        found[family] = (l_row.ttfm / s_row.ttfm) / (large.chars / small.chars)
    return found


def _passing_cell(row: Row) -> str:
    if row.compiled != "yes":
        return "-"
    if row.passing:
        return "yes"
    if row.valid_refused or row.invalid_accepted:
        return f"no {row.valid_refused}v/{row.invalid_accepted}i"
    return "no"


def report_engine(engine: str, members: list[Member], rows: list[Row]) -> None:
    ours = engine == "ours"
    head = (
        f"{'family':<10} {'size':>6} {'schema_ch':>10} {'compiled':<14} {'passing':<10} {'ttfm_us':>12} "
        f"{'tbm_p50':>8} {'tbm_p99':>8} {'masks':>6}" + (f" {'grammar_ch':>11}" if ours else "")
    )
    print(f"== {engine}")
    print(head)
    print("-" * len(head))
    for member, row in zip(members, rows, strict=True):
        line = (
            f"{member.family:<10} {member.size:>6} {member.chars:>10,} {row.compiled[:14]:<14} "
            f"{_passing_cell(row):<10} {_fmt(row.ttfm):>12} {_fmt(_p(row.tbm, 50)):>8} "
            f"{_fmt(_p(row.tbm, 99)):>8} {len(row.tbm) if row.ttfm is not None else '-':>6}"
        )
        if ours:
            chars = f"{row.grammar_chars:,}" if row.grammar_chars is not None else "-"
            line += f" {chars:>11}"
        print(line)
    problems = [(m, r) for m, r in zip(members, rows, strict=True) if r.message]
    for member, row in problems:
        what = row.compiled if row.compiled != "yes" else "not passing"
        print(f"  {member.case.id}: {what}: {row.message[:200]}")
    per_family = growth(members, rows)
    if per_family:
        print("  ttfm growth by family: " + ", ".join(f"{f} {g:.2f}" for f, g in per_family.items()))
    print()


def summary(engine: str, members: list[Member], rows: list[Row]) -> str:
    compiled = sum(r.compiled == "yes" for r in rows)
    passing = sum(r.passing for r in rows)
    per_family = growth(members, rows)
    g = max(per_family.values()) if per_family else float("nan")
    total = len(members)
    return f"{engine}: compiled={compiled}/{total} passing={passing}/{total} ttfm_growth={g:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None, help="folder of make_scale.py output (default: generate)")
    parser.add_argument("--tokenizer", default="smollm2", help="smollm2, qwen or a tokenizer folder")
    parser.add_argument("--engines", default="ours,llguidance,xgrammar")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per job, schema and engine")
    parser.add_argument("--families", default=None, help="comma-separated families (default: all)")
    parser.add_argument("--max-size", type=int, default=None, help="only the members of size <= N")
    parser.add_argument(
        "--repeat", type=int, default=3, help="TTFM = median of N cold runs when the first is under 1 s"
    )
    args = parser.parse_args(argv)
    engines = parse_engines(args.engines)
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None

    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        folder = resolve_data_dir(args.data) if args.data else None
        if folder is None or not any(folder.glob("*.jsonl")):
            folder = Path(scratch)
            generate(folder)
        members = load_members(folder, families, args.max_size)
        known = sorted({family for family, _size in family_sizes(folder).values()})
    if not members:
        raise SystemExit(
            f"no scale schemas for --families {args.families} --max-size {args.max_size} "
            f"(families: {', '.join(known)})"
        )

    tokenizer, info = load_tokenizer(args.tokenizer)
    tokenize_cases([m.case for m in members], tokenizer)
    print(
        f"scale: tokenizer={args.tokenizer} (vocab {info.vocab_size}) engines={','.join(engines)} "
        f"timeout={args.timeout:.0f}s schemas={len(members)} families="
        + ",".join(dict.fromkeys(m.family for m in members)),
        flush=True,
    )

    workers = {engine: EngineWorker(engine, args.tokenizer) for engine in engines}
    rows: dict[str, list[Row]] = {engine: [] for engine in engines}
    try:
        for worker in tqdm(workers.values(), desc="starting engines", file=sys.stderr, leave=False):
            worker.call("time", ({"type": "boolean"}, [], False), 600)  # start + warm up, not counted
        for member in tqdm(members, desc="schemas", file=sys.stderr):
            for engine, worker in workers.items():
                row = measure(worker, member, args.timeout, args.repeat)
                if engine == "ours" and row.compiled == "yes":
                    row.grammar_chars = grammar_chars(member.case.schema)  # bounded: ours compiled it in time
                rows[engine].append(row)
    finally:
        for worker in workers.values():
            worker.close()

    print("(µs; schema_ch = characters of json.dumps(schema); passing 'no Nv/Mi' = N valid refused,")
    print(" M invalid accepted; TBM: masks along the valid instances; grammar_ch = chars in all rules)")
    print()
    for engine in engines:
        report_engine(engine, members, rows[engine])
    order = [e for e in engines if e != "ours"] + (["ours"] if "ours" in engines else [])
    for engine in order:
        print(summary(engine, members, rows[engine]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
