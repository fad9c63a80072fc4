"""Time to first mask after a restart: a schema the server compiled before is served from the disk cache.

    python bench/restart.py --data ../shared/corpora/maskbench --tokenizer smollm2 [--limit N]

For each schema (at most N per file) a compiler with an empty on-disk cache compiles it and fills the first
mask (cold TTFM, the walk included); then a new compiler — what a restarted server builds, sharing only the
cache folder and the tokenizer's vocabulary, which a server builds once at start — compiles it again and fills
the first mask (restart TTFM: reading the rule grammar, parsing what the first mask needs, one trie walk).
Last line: `restart: schemas=N cold_ttfm_p50_ms=… restart_ttfm_p50_ms=… restart_ttfm_p99_ms=…`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench.engines import load_corpus, resolve_data_dir  # noqa: E402
from bench.vocabularies import load_tokenizer  # noqa: E402
from constrained.bitmask import allocate_bitmask  # noqa: E402
from constrained.disk_cache import DiskCache  # noqa: E402
from constrained.grammar import GrammarCompiler, GrammarError  # noqa: E402
from grammars import SchemaError  # noqa: E402


def first_mask_ms(compiler: GrammarCompiler, schema, bitmask) -> float:
    start = time.perf_counter()
    compiler.compile_json_schema(schema).matcher().fill_bitmask(bitmask, 0)
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/corpora/maskbench")
    parser.add_argument("--tokenizer", default="smollm2")
    parser.add_argument("--limit", type=int, default=5, help="schemas per file")
    args = parser.parse_args(argv)
    _, info = load_tokenizer(args.tokenizer)
    cases = load_corpus(resolve_data_dir(args.data), args.limit).cases
    bitmask = allocate_bitmask(1, info.vocab_size)
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as folder:
        GrammarCompiler(info).compile_json_schema({"type": "integer"}).matcher().fill_bitmask(
            bitmask, 0
        )  # JIT
        for case in cases:
            try:
                first = first_mask_ms(
                    GrammarCompiler(info, disk_cache=DiskCache(Path(folder))), case.schema, bitmask
                )
            except (GrammarError, SchemaError):  # refused schemas have no first mask
                continue
            cold.append(first)
            warm.append(
                first_mask_ms(GrammarCompiler(info, disk_cache=DiskCache(Path(folder))), case.schema, bitmask)
            )
    p = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
    print(f"{'':10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name, xs in (("cold", cold), ("restart", warm)):
        print(f"{name:10} {p(xs, 50):8.2f} {p(xs, 90):8.2f} {p(xs, 99):8.2f}")
    print(
        f"restart: schemas={len(cold)} cold_ttfm_p50_ms={p(cold, 50):.2f} "
        f"restart_ttfm_p50_ms={p(warm, 50):.2f} restart_ttfm_p99_ms={p(warm, 99):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
