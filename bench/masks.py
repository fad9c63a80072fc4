"""Mask speed: time to first mask (TTFM) and time between masks (TBM), per engine, one thread.

    python bench/masks.py --data ../shared/corpora/maskbench --tokenizer smollm2 \
        [--engines ours,llguidance,xgrammar,outlines] [--limit N] [--timeout S]

For each schema (at most N per file) each engine, in turn and in its own single-threaded process, compiles the
schema with a cold cache, creates a matcher and fills the first mask (TTFM), then walks every valid instance
token by token (the instance serialized compactly and tokenized once; all engines get the same ids), timing
each mask fill (TBM), including the one after the last token. Engines alternate schema by schema, so machine
noise hits them alike; ratios ours/peer are over the schemas both engines compiled. Figures in µs. For ours
the approximate memory of one cached grammar (its masks and token index) is printed too. The last line:
`ours: ttfm_p50_us=… ttfm_p99_us=… tbm_p50_us=… tbm_p99_us=… tbm_p999_us=…`.

    python bench/masks.py --grammars --tokenizer smollm2 [--engines ours,llguidance,xgrammar] [--walks N]

`--grammars` times text grammars instead of schemas: the JSON, arithmetic, SQL `SELECT` and CSV grammars of
`bench/grammar_cases.py`, each engine in its own syntax (ours and llguidance the Lark text, XGrammar the
GBNF text as EBNF; `--ours-syntax gbnf` gives ours the GBNF text). Their valid strings: the hand-written
ones plus N random walks of our automaton (fixed `--seed`) that `lark` (the reference parser) accepts. An
engine refusing a grammar counts as unsupported; its message is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# `python bench/NAME.py` runs with bench/ on sys.path: put the project root first for `bench.*` imports.
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import random  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.engines import (  # noqa: E402
    EngineWorker,
    GrammarText,
    Instance,
    JobTimeout,
    SchemaCase,
    load_corpus,
    parse_engines,
    resolve_data_dir,
    tokenize_cases,
)
from bench.vocabularies import load_tokenizer  # noqa: E402


@dataclass
class Timings:
    ttfm: dict[str, float] = field(default_factory=dict)  # schema id -> µs
    tbm: dict[str, list[float]] = field(default_factory=dict)  # schema id -> µs per mask
    memory: dict[str, int] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)  # unsupported / crash / timeout
    rejected: int = 0  # valid instances refused part-way (their walk stops there)
    messages: dict[str, str] = field(default_factory=dict)  # schema id -> why it did not compile
    rejected_by: dict[str, int] = field(default_factory=dict)  # schema id -> valid instances refused


def _p(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


# The syntax each engine is given a text grammar in (`--grammars`); outlines takes none (unsupported).
GRAMMAR_KINDS = {"ours": "lark", "llguidance": "lark", "xgrammar": "ebnf", "outlines": "lark"}
WARMUP_GRAMMARS = {"lark": 'start: "a"\n', "ebnf": 'root ::= "a"\n', "gbnf": 'root ::= "a"\n'}


def grammar_cases(walks: int, seed: int, tokenizer) -> list[SchemaCase]:
    """One case per shared grammar: `schema` maps a syntax to its text; the valid strings are the hand-written
    ones and `walks` random walks of our automaton of the Lark text that `lark` parses too and the tokenizer
    round-trips (walks pick rare code points and control characters, which some tokenizers drop)."""
    import lark

    from bench.grammar_cases import GRAMMARS, walk
    from constrained.token_index import LazyDFA
    from grammars.lark_grammar import compile_lark

    rng = random.Random(seed)
    cases = []
    for name, (lark_text, gbnf_text, valid, _invalid) in GRAMMARS.items():
        parser = lark.Lark(lark_text, parser="earley")
        dfa = LazyDFA(compile_lark(lark_text))
        texts = list(valid)
        for _ in range(walks):
            text = walk(dfa, rng, rng.randint(0, 60))
            try:
                parser.parse(text)
            except lark.exceptions.LarkError:
                continue
            if tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) != text:
                continue
            if text not in texts:
                texts.append(text)
        instances = [Instance(f"{name} #{i}", True, text) for i, text in enumerate(texts)]
        cases.append(SchemaCase(name, {"lark": lark_text, "gbnf": gbnf_text, "ebnf": gbnf_text}, instances))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", action="append", help="MaskBench folder (repeatable)")
    parser.add_argument("--grammars", action="store_true", help="time the shared text grammars, not schemas")
    parser.add_argument("--walks", type=int, default=8, help="--grammars: random walks per grammar")
    parser.add_argument("--seed", type=int, default=0, help="--grammars: seed of the random walks")
    parser.add_argument("--ours-syntax", choices=("lark", "gbnf"), default="lark", help="--grammars: ours")
    parser.add_argument("--tokenizer", default="smollm2", help="smollm2, qwen or a tokenizer folder")
    parser.add_argument("--engines", default="ours,llguidance,xgrammar,outlines")
    parser.add_argument("--limit", type=int, default=None, help="at most N schemas per file")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per schema and engine")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory estimate for ours")
    args = parser.parse_args(argv)
    if bool(args.data) == args.grammars:
        parser.error("give --data FOLDER (schemas) or --grammars, not both")
    engines = parse_engines(args.engines)
    kinds = {**GRAMMAR_KINDS, "ours": args.ours_syntax}
    noun = "grammars" if args.grammars else "schemas"

    tokenizer, info = load_tokenizer(args.tokenizer)
    cases = []
    if args.grammars:
        cases = grammar_cases(args.walks, args.seed, tokenizer)
    for folder in args.data or []:
        cases += load_corpus(resolve_data_dir(folder), args.limit).cases
    tokenize_cases(cases, tokenizer)
    cases = [c for c in cases if any(i.valid for i in c.instances)]
    valid_tokens = sum(len(i.token_ids) for c in cases for i in c.instances if i.valid)
    valid_count = sum(i.valid for c in cases for i in c.instances)
    detail = (
        f"syntax={','.join(f'{e}:{kinds[e]}' for e in engines)} walks={args.walks} seed={args.seed}"
        if args.grammars
        else f"limit={args.limit}"
    )
    print(
        f"masks: tokenizer={args.tokenizer} (vocab {info.vocab_size}) engines={','.join(engines)} "
        f"{detail} {noun}={len(cases)} valid instances={valid_count} valid-instance tokens={valid_tokens}",
        flush=True,
    )

    workers = {engine: EngineWorker(engine, args.tokenizer) for engine in engines}
    timings = {engine: Timings() for engine in engines}
    try:
        for worker in tqdm(workers.values(), desc="starting engines", file=sys.stderr, leave=False):
            worker.call("time", ({"type": "boolean"}, [], False), 600)  # start + warm up, not counted
            if args.grammars:
                kind = kinds[worker.engine]
                worker.call("time", (GrammarText(kind, WARMUP_GRAMMARS[kind]), [], False), 600)
        for case in tqdm(cases, desc=noun, file=sys.stderr):
            instances = [inst.token_ids for inst in case.instances if inst.valid]
            for engine, worker in workers.items():
                memory = engine == "ours" and not args.no_memory
                kind = kinds[engine]
                source = GrammarText(kind, case.schema[kind]) if args.grammars else case.schema
                try:
                    result = worker.call("time", (source, instances, memory), args.timeout)
                except JobTimeout:
                    result = {"compile_error": "timeout", "message": f"over {args.timeout} s"}
                t = timings[engine]
                if result["compile_error"] is not None:
                    t.failures[result["compile_error"]] += 1
                    t.messages[case.id] = f"{result['compile_error']}: {result.get('message', '')}"
                    continue
                t.ttfm[case.id] = result["ttfm_us"]
                t.tbm[case.id] = result["tbm_us"]
                t.rejected += result["rejected"]
                t.rejected_by[case.id] = result["rejected"]
                if result.get("memory_bytes") is not None:
                    t.memory[case.id] = result["memory_bytes"]
    finally:
        for worker in workers.values():
            worker.close()

    head = (
        f"{'engine':<11} {'compiled':>8} {'unsup':>5} {'crash':>5} {'tmout':>5} {'refused':>7} "
        f"{'ttfm_p50':>10} {'ttfm_p90':>10} {'ttfm_p99':>10} {'masks':>8} {'tbm_p50':>8} {'tbm_p99':>8} "
        f"{'tbm_p99.9':>9}"
    )
    print(head)
    print("-" * len(head))
    for engine in engines:
        t = timings[engine]
        ttfm = list(t.ttfm.values())
        tbm = [v for values in t.tbm.values() for v in values]
        print(
            f"{engine:<11} {len(ttfm):>8} {t.failures['unsupported']:>5} {t.failures['crash']:>5} "
            f"{t.failures['timeout']:>5} {t.rejected:>7} {_fmt(_p(ttfm, 50)):>10} {_fmt(_p(ttfm, 90)):>10} "
            f"{_fmt(_p(ttfm, 99)):>10} {len(tbm):>8} {_fmt(_p(tbm, 50)):>8} {_fmt(_p(tbm, 99)):>8} "
            f"{_fmt(_p(tbm, 99.9)):>9}"
        )
    print(f"(µs; compiled = {noun} compiled in time; refused = valid instances refused part-way)")

    if args.grammars:  # few cases: each one, per engine
        print(
            f"{'grammar':<8} {'engine':<11} {'ttfm':>10} {'refused':>7} {'masks':>6} "
            f"{'tbm_p50':>8} {'tbm_p99':>8}"
        )
        for case in cases:
            for engine in engines:
                t = timings[engine]
                if case.id not in t.ttfm:
                    print(f"{case.id:<8} {engine:<11} {t.messages.get(case.id, '?')[:200]}")
                    continue
                tbm = t.tbm[case.id]
                print(
                    f"{case.id:<8} {engine:<11} {_fmt(t.ttfm[case.id]):>10} {t.rejected_by[case.id]:>7} "
                    f"{len(tbm):>6} {_fmt(_p(tbm, 50)):>8} {_fmt(_p(tbm, 99)):>8}"
                )

    if "ours" in timings:
        ours = timings["ours"]
        for peer in engines:
            if peer == "ours":
                continue
            common = sorted(set(ours.ttfm) & set(timings[peer].ttfm))
            if not common:
                print(f"ours/{peer}: no {noun[:-1]} compiled by both")
                continue
            o_ttfm = [ours.ttfm[c] for c in common]
            p_ttfm = [timings[peer].ttfm[c] for c in common]
            o_tbm = [v for c in common for v in ours.tbm[c]]
            p_tbm = [v for c in common for v in timings[peer].tbm[c]]
            print(
                f"ours/{peer} over {len(common)} common {noun}: "
                f"ttfm_p50 {_p(o_ttfm, 50) / _p(p_ttfm, 50):.2f}x  "
                f"ttfm_p99 {_p(o_ttfm, 99) / _p(p_ttfm, 99):.2f}x  "
                f"tbm_p50 {_p(o_tbm, 50) / _p(p_tbm, 50):.2f}x  "
                f"tbm_p99 {_p(o_tbm, 99) / _p(p_tbm, 99):.2f}x  "
                f"tbm_p99.9 {_p(o_tbm, 99.9) / _p(p_tbm, 99.9):.2f}x"
            )
        if ours.memory:
            mem = np.array(list(ours.memory.values()), dtype=float) / 1024
            print(
                f"ours memory per cached grammar after the walk (masks + token index, approx.): "
                f"p50={_fmt(_p(mem, 50))} KiB p99={_fmt(_p(mem, 99))} KiB max={_fmt(mem.max())} KiB"
            )
        slow = sorted(ours.ttfm.items(), key=lambda kv: -kv[1])[:5]
        if slow:
            print("ours slowest TTFM: " + ", ".join(f"{k} {v / 1e6:.2f}s" for k, v in slow))
        ttfm = list(ours.ttfm.values())
        tbm = [v for values in ours.tbm.values() for v in values]
        print(
            f"ours: ttfm_p50_us={_p(ttfm, 50):.0f} ttfm_p99_us={_p(ttfm, 99):.0f} "
            f"tbm_p50_us={_p(tbm, 50):.1f} tbm_p99_us={_p(tbm, 99):.1f} tbm_p999_us={_p(tbm, 99.9):.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
