"""Compiler conformance: does each engine accept every valid instance and reject every invalid one?

    python bench/conformance.py --data ../shared/corpora/maskbench \
        --data ../shared/corpora/json-schema-test-suite/tests/draft2020-12 \
        [--data .../tests/draft2019-09 --data .../tests/draft6 --data .../tests/draft4] \
        --tokenizer smollm2 [--engines ours,llguidance,xgrammar] [--limit N] [--timeout S]

Each --data folder is a row of the table; a Test-Suite folder's dialect is given to its schemas as `$schema`.

Rules (MaskBench's): each instance is serialized compactly and tokenized once (every engine gets the same
ids); a valid instance must be accepted token by token and be able to end there, an invalid one must hit a
refused token or be unable to end. A schema passes when it compiles and all its instances are judged right.
An invalid instance accepted is an *invalidation error* (a soundness bug); a valid one refused is a
*validation error* (non-canonical tokenization can cause these for token-exact engines; all engines see
the same ids).

`--limit N` reads at most N schemas per file. Each engine runs in its own process; a schema whose compile and
checks exceed `--timeout` seconds counts as a timeout and the process is restarted. The last line totals
`ours` over every --data folder: `ours: passing=N invalidation_errors=M`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# `python bench/NAME.py` runs with bench/ on sys.path: put the project root first for `bench.*` imports.
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from tqdm import tqdm  # noqa: E402

from bench.engines import (  # noqa: E402
    Corpus,
    EngineWorker,
    JobTimeout,
    load_corpus,
    parse_engines,
    resolve_data_dir,
    tokenize_cases,
)
from bench.vocabularies import load_tokenizer  # noqa: E402


@dataclass
class Stats:
    schemas: int = 0
    passing: int = 0
    compile_errors: int = 0
    crashes: int = 0
    timeouts: int = 0
    validation_errors: int = 0  # valid instances refused
    invalidation_errors: int = 0  # invalid instances accepted
    instances: int = 0
    instances_passing: int = 0
    keywords: Counter = field(default_factory=Counter)
    invalidation_ids: list[str] = field(default_factory=list)
    validation_ids: list[str] = field(default_factory=list)
    crash_ids: list[str] = field(default_factory=list)
    timeout_ids: list[str] = field(default_factory=list)
    compile_messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Stats) -> None:
        for name in (
            "schemas passing compile_errors crashes timeouts validation_errors invalidation_errors "
            "instances instances_passing seconds"
        ).split():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.keywords.update(other.keywords)
        for name in ("invalidation_ids", "validation_ids", "crash_ids", "timeout_ids", "compile_messages"):
            getattr(self, name).extend(getattr(other, name))


def run_engine(engine: str, tokenizer: str, corpora: list[Corpus], timeout: float, position: int) -> dict:
    worker = EngineWorker(engine, tokenizer)
    stats = {corpus.label: Stats() for corpus in corpora}
    total = sum(len(c.cases) for c in corpora)
    try:
        with tqdm(total=total, desc=f"{engine:>10}", position=position, file=sys.stderr, leave=True) as bar:
            for corpus in corpora:
                st = stats[corpus.label]
                for case in corpus.cases:
                    st.schemas += 1
                    st.instances += len(case.instances)
                    jobs = [(inst.token_ids, inst.valid) for inst in case.instances]
                    start = time.perf_counter()
                    try:
                        result = worker.call("check", (case.schema, jobs), timeout)
                    except JobTimeout:
                        result = {"compile_error": "timeout"}
                    st.seconds += time.perf_counter() - start
                    bar.update()
                    error = result["compile_error"]
                    if error == "timeout":
                        st.timeouts += 1
                        st.timeout_ids.append(case.id)
                        continue
                    if error is not None:
                        st.compile_errors += 1
                        st.keywords[result.get("keyword") or "<other>"] += 1
                        st.compile_messages.append(f"{case.id}: {result.get('message', '')[:160]}")
                        if error == "crash":
                            st.crashes += 1
                            st.crash_ids.append(f"{case.id}: {result.get('message', '')[:160]}")
                        continue
                    right = 0
                    for inst, accepted in zip(case.instances, result["accepted"], strict=True):
                        if accepted == inst.valid:
                            right += 1
                        elif inst.valid:
                            st.validation_errors += 1
                            st.validation_ids.append(f"{case.id} [{inst.description}] {inst.text[:100]}")
                        else:
                            st.invalidation_errors += 1
                            st.invalidation_ids.append(f"{case.id} [{inst.description}] {inst.text[:100]}")
                    st.instances_passing += right
                    st.passing += right == len(case.instances)
    finally:
        worker.close()
    return stats


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "   - "


def report(
    engines: list[str], corpora: list[Corpus], results: dict[str, dict[str, Stats]], show: int = 12
) -> None:
    head = (
        f"{'engine':<11} {'data':<22} {'schemas':>7} {'passing':>14} {'compile_err':>11} {'crash':>5} "
        f"{'timeout':>7} {'valid_err':>9} {'invalid_err':>11} {'instances passing':>20} {'time_s':>7}"
    )
    print(head)
    print("-" * len(head))
    totals = {}
    for engine in engines:
        total = Stats()
        for corpus in corpora:
            st = results[engine][corpus.label]
            total.add(st)
            inst = f"{st.instances_passing}/{st.instances}" if corpus.test_suite else ""
            print(
                f"{engine:<11} {corpus.label[:22]:<22} {st.schemas:>7} "
                f"{st.passing:>6} ({_pct(st.passing, st.schemas)}) "
                f"{st.compile_errors:>11} {st.crashes:>5} {st.timeouts:>7} {st.validation_errors:>9} "
                f"{st.invalidation_errors:>11} {inst:>20} {st.seconds:>7.1f}"
            )
        totals[engine] = total
    print()
    if "ours" in totals and len(engines) > 1:
        ours = totals["ours"]
        for peer in engines:
            if peer != "ours" and totals[peer].passing:
                print(f"passing ours/{peer} = {ours.passing / totals[peer].passing:.3f}")
        print()
    for engine in engines:
        st = totals[engine]
        print(f"--- {engine}: details")
        if st.keywords:
            top = ", ".join(f"{k}={n}" for k, n in st.keywords.most_common(12))
            print(f"  compile errors by keyword: {top}")
            for line in st.compile_messages[:4]:
                print(f"    e.g. {line}")
        for title, ids in (
            ("invalidation errors (invalid accepted)", st.invalidation_ids),
            ("validation errors (valid refused)", st.validation_ids),
            ("crashes", st.crash_ids),
            ("timeouts", st.timeout_ids),
        ):
            if ids:
                print(f"  {title}: {len(ids)}")
                for line in ids[:show]:
                    print(f"    {line}")
                if len(ids) > show:
                    print(f"    ... {len(ids) - show} more")
    print()
    order = [e for e in engines if e != "ours"] + (["ours"] if "ours" in engines else [])
    for engine in order:
        st = totals[engine]
        print(f"{engine}: passing={st.passing} invalidation_errors={st.invalidation_errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", action="append", required=True, help="MaskBench or Test-Suite folder")
    parser.add_argument("--tokenizer", default="smollm2", help="smollm2, qwen or a tokenizer folder")
    parser.add_argument("--engines", default="ours,llguidance,xgrammar")
    parser.add_argument("--limit", type=int, default=None, help="at most N schemas per file")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per schema (compile + checks)")
    parser.add_argument(
        "--jobs", type=int, default=None, help="engines run at once (default: min(engines, CPUs))"
    )
    parser.add_argument("--show", type=int, default=12, help="ids listed per kind of error and engine")
    args = parser.parse_args(argv)
    engines = parse_engines(args.engines)

    tokenizer, _info = load_tokenizer(args.tokenizer)  # also converts/caches it once for the workers
    corpora = [load_corpus(resolve_data_dir(d), args.limit) for d in args.data]
    for corpus in corpora:
        tokenize_cases(corpus.cases, tokenizer)
    print(
        f"conformance: tokenizer={args.tokenizer} engines={','.join(engines)} limit={args.limit} "
        f"timeout={args.timeout}s data=" + ", ".join(f"{c.label}({len(c.cases)})" for c in corpora),
        flush=True,
    )
    jobs = args.jobs or max(1, min(len(engines), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            engine: pool.submit(run_engine, engine, args.tokenizer, corpora, args.timeout, i)
            for i, engine in enumerate(engines)
        }
        results = {engine: future.result() for engine, future in futures.items()}
    print(file=sys.stderr)
    report(engines, corpora, results, args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
