"""End-to-end decode speed per model runtime: free vs JSON-schema-constrained tokens/s, and valid outputs.

    python bench/e2e.py [--runtimes torch,llama.cpp] [--batch 1,16] [--prompts K] [--max-tokens M]

For each runtime (`constrained.models.load_model(..., runtime=R)`) and batch size B, the same K prompts run
greedy through `constrained.engine.Engine`, once constrained by their JSON schema and once free, B requests
at a time; free and constrained rounds alternate (ABBA) so machine noise hits both alike. Grammars are
compiled before timing. Every constrained output is validated with `jsonschema`.
Per runtime and batch: `free tok/s`, `constrained tok/s`, their ratio, valid outputs. Last line:
`ours_<runtime>_constrained / ours_<first runtime>_constrained = R` when two runtimes run, else the
constrained/free ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# `python bench/NAME.py` runs with bench/ on sys.path: put the project root first for `bench.*` imports.
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import jsonschema  # noqa: E402

from constrained.engine import (  # noqa: E402
    ChoiceDelta,
    Engine,
    GenerationRequest,
    RequestFailed,
    RequestFinished,
)
from constrained.grammar import GrammarCompiler  # noqa: E402
from constrained.models import RUNTIMES, load_model  # noqa: E402
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
    """Waits for a set of requests to finish; counts their completion tokens and keeps their texts."""

    def __init__(self, expected: int) -> None:
        self.tokens = 0
        self.failures: list[str] = []
        self.texts: dict[int, list[str]] = {}
        self._left = expected
        self._lock = threading.Lock()
        self._done = threading.Event()
        if expected == 0:
            self._done.set()

    def emitter(self, key: int):
        self.texts[key] = []

        def emit(event) -> None:
            if isinstance(event, ChoiceDelta):
                self.texts[key].append(event.text)
            elif isinstance(event, RequestFinished | RequestFailed):
                with self._lock:
                    if isinstance(event, RequestFinished):
                        self.tokens += event.completion_tokens
                    else:
                        self.failures.append(event.message)
                    self._left -= 1
                    if self._left == 0:
                        self._done.set()

        return emit

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            raise TimeoutError("requests did not finish in time")


def run(
    engine: Engine, requests: list[GenerationRequest], timeout: float = 1800.0
) -> tuple[Collector, float]:
    """Submit `requests` at once and wait for all; returns the collector and the seconds taken."""
    collector = Collector(len(requests))
    start = time.perf_counter()
    for key, request in enumerate(requests):
        engine.submit(request, collector.emitter(key))
    collector.wait(timeout)
    return collector, time.perf_counter() - start


def valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def measure(runtime: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """tokens/s free and constrained, and valid outputs, per batch size, on one runtime."""
    lm = load_model(args.model, runtime=runtime)
    tokenizer = lm.tokenizer
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer, lm.vocab_size))
    grammars = [compiler.compile_json_schema(schema) for _prompt, schema in TASKS]
    greedy = SamplingParams(temperature=0.0)

    def request(k: int, constrained: bool) -> GenerationRequest:
        prompt, schema = TASKS[k % len(TASKS)]
        prompt += " Answer with JSON only." if constrained else ""
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        grammar = grammars[k % len(TASKS)] if constrained else None
        return GenerationRequest(list(ids), args.max_tokens, params=greedy, grammar=grammar)

    results: dict[int, dict[str, float]] = {}
    engine = Engine(lm.runtime(max(args.batch)), tokenizer, max_batch_size=max(args.batch))
    try:
        run(engine, [request(0, False)])  # warm-up: first forward passes and first masks, untimed
        run(engine, [request(0, True)])
        for batch in args.batch:
            totals = {False: [0, 0.0], True: [0, 0.0]}
            checked = passed = 0
            failures: list[str] = []
            for rounds in range(0, args.prompts, batch):
                ks = range(rounds, min(rounds + batch, args.prompts))
                order = (False, True) if (rounds // batch) % 2 == 0 else (True, False)
                for constrained in order:
                    collector, seconds = run(engine, [request(k, constrained) for k in ks])
                    totals[constrained][0] += collector.tokens
                    totals[constrained][1] += seconds
                    failures += collector.failures
                    if constrained:
                        for key, k in enumerate(ks):
                            checked += 1
                            passed += valid("".join(collector.texts[key]), TASKS[k % len(TASKS)][1])
            if failures:
                print(f"{runtime} batch {batch}: {len(failures)} requests failed, e.g. {failures[0]}")
            rate = {mode: tokens / seconds if seconds else 0.0 for mode, (tokens, seconds) in totals.items()}
            results[batch] = {
                "free": rate[False],
                "constrained": rate[True],
                "valid": passed,
                "checked": checked,
            }
            print(
                f"{runtime:>9} batch {batch:>3}: free {rate[False]:7.1f} tok/s  constrained "
                f"{rate[True]:7.1f} tok/s  constrained/free={rate[True] / max(rate[False], 1e-9):.3f}  "
                f"valid {passed}/{checked}",
                flush=True,
            )
    finally:
        engine.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtimes", default="torch", help=f"comma-separated, of {', '.join(RUNTIMES)}")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (requests at once)")
    parser.add_argument("--prompts", type=int, default=8, help="number of prompts (cycling over 4 tasks)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args(argv)
    args.batch = [int(b) for b in args.batch.split(",")]
    runtimes = args.runtimes.split(",")
    print(f"e2e: model={args.model} prompts={args.prompts} max_tokens={args.max_tokens} greedy", flush=True)
    results = {runtime: measure(runtime, args) for runtime in runtimes}
    first, batch = runtimes[0], args.batch[0]
    if len(runtimes) > 1:
        for other in runtimes[1:]:
            ratio = results[other][batch]["constrained"] / max(results[first][batch]["constrained"], 1e-9)
            print(f"ours_{other}_constrained / ours_{first}_constrained = {ratio:.2f}")
    else:
        ratio = results[first][batch]["constrained"] / max(results[first][batch]["free"], 1e-9)
        print(f"constrained/unconstrained={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
