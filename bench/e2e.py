"""End-to-end decode speed: tokens/s with a JSON-schema constraint vs unconstrained, on the embedded model.

    python bench/e2e.py [--prompts K] [--max-tokens M] [--concurrent]

The same K prompts run greedy through `constrained.engine.Engine`, once constrained by a JSON schema and once
free; the two runs alternate prompt by prompt (and which goes first alternates too), so machine noise hits
both alike. Grammars are compiled before timing (compile time is printed separately). By default requests run
one at a time (batch 1); `--concurrent` submits each mode's K requests at once (continuous batching).
Last line: `constrained/unconstrained=R` (ratio of tokens/s).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# `python bench/NAME.py` runs with bench/ on sys.path: put the project root first for `bench.*` imports.
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from tqdm import tqdm  # noqa: E402

from constrained.engine import (  # noqa: E402
    Engine,
    GenerationRequest,
    RequestFailed,
    RequestFinished,
)
from constrained.grammar import GrammarCompiler  # noqa: E402
from constrained.models import load_model  # noqa: E402
from constrained.sampling import SamplingParams  # noqa: E402
from constrained.tokenizer_info import TokenizerInfo  # noqa: E402

TASKS = [
    (
        "Describe a fictional person as JSON with their name, age and email.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0, "maximum": 150},
                "email": {"type": "string"},
            },
            "required": ["name", "age", "email"],
            "additionalProperties": False,
        },
    ),
    (
        "Give the weather forecast for Paris tomorrow as JSON.",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "temperature_c": {"type": "number"},
                "conditions": {"enum": ["sunny", "cloudy", "rain", "snow"]},
            },
            "required": ["city", "temperature_c", "conditions"],
            "additionalProperties": False,
        },
    ),
    (
        "List three fruits and their colours as JSON.",
        {
            "type": "object",
            "properties": {
                "fruits": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "colour": {"type": "string"}},
                        "required": ["name", "colour"],
                        "additionalProperties": False,
                    },
                    "maxItems": 5,
                }
            },
            "required": ["fruits"],
            "additionalProperties": False,
        },
    ),
    (
        "Summarise a product review as JSON with a rating from 1 to 5 and a list of tags.",
        {
            "type": "object",
            "properties": {
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "summary": {"type": "string", "maxLength": 200},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            },
            "required": ["rating", "summary", "tags"],
            "additionalProperties": False,
        },
    ),
]


class Collector:
    """Waits for a set of requests to finish; counts their completion tokens."""

    def __init__(self, expected: int) -> None:
        self.tokens = 0
        self.failures: list[str] = []
        self._left = expected
        self._lock = threading.Lock()
        self._done = threading.Event()
        if expected == 0:
            self._done.set()

    def emit(self, event) -> None:
        if isinstance(event, RequestFinished | RequestFailed):
            with self._lock:
                if isinstance(event, RequestFinished):
                    self.tokens += event.completion_tokens
                else:
                    self.failures.append(event.message)
                self._left -= 1
                if self._left == 0:
                    self._done.set()

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            raise TimeoutError("requests did not finish in time")


def run(
    engine: Engine, requests: list[GenerationRequest], timeout: float = 1800.0
) -> tuple[int, float, list]:
    """Submit `requests` at once and wait for all; returns (completion tokens, seconds, failures)."""
    collector = Collector(len(requests))
    start = time.perf_counter()
    for request in requests:
        engine.submit(request, collector.emit)
    collector.wait(timeout)
    return collector.tokens, time.perf_counter() - start, collector.failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=8, help="number of prompts (cycling over 4 tasks)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrent", action="store_true", help="submit each mode's requests at once")
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args(argv)

    lm = load_model(args.model)
    tokenizer = lm.tokenizer
    vocab_size = int(lm.model.config.vocab_size)
    engine = Engine(lm.model, tokenizer)
    start = time.perf_counter()
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer, vocab_size))
    setup_s = time.perf_counter() - start
    grammars = []
    compile_s = []
    for _prompt, schema in tqdm(TASKS, desc="compiling schemas", file=sys.stderr):
        start = time.perf_counter()
        grammars.append(compiler.compile_json_schema(schema))
        compile_s.append(time.perf_counter() - start)
    print(
        f"e2e: model={lm.model_id} prompts={args.prompts} max_tokens={args.max_tokens} "
        f"mode={'concurrent' if args.concurrent else 'one at a time'} compiler setup {setup_s:.1f}s, "
        f"schema compiles " + " ".join(f"{s:.1f}s" for s in compile_s),
        flush=True,
    )

    greedy = SamplingParams(temperature=0.0)

    def request(k: int, constrained: bool) -> GenerationRequest:
        prompt, _schema = TASKS[k % len(TASKS)]
        if constrained:
            prompt += " Answer with JSON only."
        messages = [{"role": "user", "content": prompt}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        grammar = grammars[k % len(TASKS)] if constrained else None
        return GenerationRequest(list(ids), args.max_tokens, params=greedy, grammar=grammar)

    # warm up both paths (first forward passes, mask caches of the first states) outside the timing
    run(engine, [request(0, False)])
    run(engine, [request(0, True)])

    totals = {True: [0, 0.0], False: [0, 0.0]}
    failures: list[str] = []
    if args.concurrent:
        for constrained in (False, True, True, False):  # ABBA
            tokens, seconds, failed = run(engine, [request(k, constrained) for k in range(args.prompts)])
            totals[constrained][0] += tokens
            totals[constrained][1] += seconds
            failures += failed
    else:
        for k in tqdm(range(args.prompts), desc="prompts", file=sys.stderr):
            order = (False, True) if k % 2 == 0 else (True, False)
            for constrained in order:
                tokens, seconds, failed = run(engine, [request(k, constrained)])
                totals[constrained][0] += tokens
                totals[constrained][1] += seconds
                failures += failed
    engine.shutdown()
    if failures:
        print(f"{len(failures)} requests failed, e.g. {failures[0]}")
    rate = {mode: tokens / seconds if seconds else 0.0 for mode, (tokens, seconds) in totals.items()}
    for mode, label in ((False, "unconstrained"), (True, "constrained")):
        tokens, seconds = totals[mode]
        print(f"{label:>13}: {tokens} tokens in {seconds:.2f}s = {rate[mode]:.1f} tokens/s")
    ratio = rate[True] / rate[False] if rate[False] else float("nan")
    print(f"constrained/unconstrained={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
