"""End-to-end decode speed per model runtime: free vs JSON-schema-constrained tokens/s, and valid outputs.

    python bench/e2e.py [--runtimes torch,llama.cpp] [--batch 1,16] [--prompts K] [--max-tokens M]
                        [--overlap on,off] [--fast-forward on,off] [--slow-forward-ms MS]
                        [--peer-llama-server PATH]

For each runtime (`constrained.models.load_model(..., runtime=R)`) and batch size B, the same K prompts run
greedy through `constrained.engine.Engine`, once constrained by their JSON schema and once free, B requests
at a time; free and constrained rounds alternate (ABBA) so machine noise hits both alike. Grammars are
compiled before timing. Every constrained output is validated with `jsonschema`. `--overlap on,off` runs
each runtime with the masks computed during the forward pass and after it (the engine's `overlap_masks`);
`--fast-forward on,off` runs every constrained round twice, with forced tokens appended without sampling and
sampled one forward pass at a time (alternating which goes first); forward passes per constrained output
token are printed, and the line
`fast_forward: on_tok_s=… off_tok_s=… speedup=R` (constrained tokens/s, first batch size, first runtime).
`--slow-forward-ms 20` adds a GIL-free wait to every decode step, standing in for a GPU forward pass.
`--peer-llama-server PATH` also starts llama.cpp's own `llama-server` binary on the same GGUF (parallel
slots = the largest batch, same context per slot) and sends it the same prompts through its OpenAI chat
endpoint, constrained with its own `response_format: json_schema` (its GBNF grammar), round by round
interleaved with ours (the llama.cpp runtime's, else the first runtime's; who goes first alternates).
Per runtime and batch: `free tok/s`, `constrained tok/s`, their ratio, valid outputs. Last lines with a
peer: `ours_llama.cpp_free / llama_server_free = R` and `ours_llama.cpp_constrained /
llama_server_constrained = R` (first batch size), else
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
import os  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import nullcontext  # noqa: E402

import httpx  # noqa: E402
import jsonschema  # noqa: E402

from constrained.engine import (  # noqa: E402
    ChoiceDelta,
    Engine,
    GenerationRequest,
    RequestFailed,
    RequestFinished,
)
from constrained.grammar import GrammarCompiler  # noqa: E402
from constrained.models import embedded_gguf_path, load_model  # noqa: E402
from constrained.runtimes import RUNTIMES  # noqa: E402
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
    (
        "Create a user profile for a new employee as JSON.",
        {
            "type": "object",
            "properties": {
                "first_name": {"type": "string", "maxLength": 20},
                "last_name": {"type": "string", "maxLength": 20},
                "employee_id": {"type": "integer", "minimum": 1},
                "department_name": {"enum": ["engineering", "sales", "marketing", "finance"]},
                "office_location": {"type": "string", "maxLength": 20},
                "is_full_time": {"type": "boolean"},
                "manager_email_address": {"type": "string", "maxLength": 40},
                "start_date": {"type": "string", "format": "date"},
            },
            "required": [
                "first_name",
                "last_name",
                "employee_id",
                "department_name",
                "office_location",
                "is_full_time",
                "manager_email_address",
                "start_date",
            ],
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


class Instrumented:
    """A runtime that counts row-steps (one row fed in one forward pass) and can also wait per step, GIL
    released, as a GPU forward pass would (`milliseconds`)."""

    def __init__(self, runtime, milliseconds: float) -> None:
        self._runtime, self._seconds, self.steps = runtime, milliseconds / 1000, 0

    def __getattr__(self, name: str):
        return getattr(self._runtime, name)

    def decode(self, tokens: list[list[int]]):
        self.steps += len(tokens)
        if self._seconds:
            time.sleep(self._seconds)
        return self._runtime.decode(tokens)


def measure(
    runtime: str, overlap: bool, args: argparse.Namespace, peer: LlamaServerPeer | None = None
) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]:
    """tokens/s free and constrained, and valid outputs, per batch size, on one runtime; and the same for
    `peer` (empty without one), whose rounds are interleaved with ours (which goes first alternates), so
    machine noise hits both alike. With `--fast-forward on,off` every constrained round also runs without
    fast-forward, the order alternating, so both see the same machine."""
    label = runtime if overlap else f"{runtime} serial"
    compare_ff = args.fast_forward == "on,off"
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
    peer_results: dict[int, dict[str, float]] = {}
    model_runtime = Instrumented(lm.runtime(max(args.batch)), args.slow_forward_ms)
    engine = Engine(
        model_runtime,
        tokenizer,
        max_batch_size=max(args.batch),
        overlap_masks=overlap,
        fast_forward=args.fast_forward != "off",
    )
    try:
        run(engine, [request(0, False)])  # warm-up: first forward passes and first masks, untimed
        run(engine, [request(0, True)])
        for batch in args.batch:
            totals = {False: [0, 0.0], True: [0, 0.0]}
            without_ff = [0, 0.0]
            steps = {True: 0, False: 0}  # row-steps of constrained rounds, with / without fast-forward
            checked = passed = 0
            failures: list[str] = []
            peer_totals = {False: [0, 0.0], True: [0, 0.0]}
            peer_passed = 0
            for number, (ks, constrained) in enumerate(rounds(args, batch)):
                if peer is not None and number % 2 == 0:  # the peer's round first, every other round
                    peer_passed += _peer_round(peer, ks, constrained, peer_totals)
                variants = [engine.fast_forward]
                if constrained and compare_ff:
                    variants = [True, False] if number % 2 else [False, True]
                for fast in variants:
                    engine.fast_forward = fast
                    before = model_runtime.steps
                    collector, seconds = run(engine, [request(k, constrained) for k in ks])
                    failures += collector.failures
                    if constrained:
                        steps[fast] += model_runtime.steps - before
                    if constrained and not fast and compare_ff:
                        without_ff[0] += collector.tokens
                        without_ff[1] += seconds
                        continue
                    totals[constrained][0] += collector.tokens
                    totals[constrained][1] += seconds
                    if constrained:
                        for key, k in enumerate(ks):
                            checked += 1
                            passed += valid("".join(collector.texts[key]), TASKS[k % len(TASKS)][1])
                engine.fast_forward = args.fast_forward != "off"
                if peer is not None and number % 2 == 1:
                    peer_passed += _peer_round(peer, ks, constrained, peer_totals)
            if peer is not None:
                checked_peer = sum(len(ks) for ks, c in rounds(args, batch) if c)
                peer_results[batch] = report("llama-server", batch, peer_totals, peer_passed, checked_peer)
            if failures:
                print(f"{label} batch {batch}: {len(failures)} requests failed, e.g. {failures[0]}")
            results[batch] = report(label, batch, totals, passed, checked)
            results[batch]["passes_per_token"] = steps[engine.fast_forward] / max(totals[True][0], 1)
            if compare_ff:
                results[batch]["no_ff"] = without_ff[0] / max(without_ff[1], 1e-9)
                results[batch]["no_ff_passes_per_token"] = steps[False] / max(without_ff[0], 1)
    finally:
        engine.shutdown()
    return results, peer_results


def _peer_round(peer: LlamaServerPeer, ks: range, constrained: bool, totals: dict) -> int:
    """One round on the peer, added to `totals`; how many of its constrained outputs are valid."""
    tokens, seconds, texts = peer.round(ks, constrained)
    totals[constrained][0] += tokens
    totals[constrained][1] += seconds
    if not constrained:
        return 0
    return sum(valid(text, TASKS[k % len(TASKS)][1]) for k, text in zip(ks, texts, strict=True))


def rounds(args: argparse.Namespace, batch: int):
    """The timed rounds of one batch size: (prompt indices, constrained?) in ABBA order."""
    for first in range(0, args.prompts, batch):
        ks = range(first, min(first + batch, args.prompts))
        order = (False, True) if (first // batch) % 2 == 0 else (True, False)
        for constrained in order:
            yield ks, constrained


def report(name: str, batch: int, totals: dict, passed: int, checked: int) -> dict[str, float]:
    rate = {mode: tokens / seconds if seconds else 0.0 for mode, (tokens, seconds) in totals.items()}
    print(
        f"{name:>12} batch {batch:>3}: free {rate[False]:7.1f} tok/s  constrained {rate[True]:7.1f} tok/s  "
        f"constrained/free={rate[True] / max(rate[False], 1e-9):.3f}  valid {passed}/{checked}",
        flush=True,
    )
    return {"free": rate[False], "constrained": rate[True], "valid": passed, "checked": checked}


class LlamaServerPeer:
    """llama.cpp's own server on the same GGUF, asked the same prompts through its OpenAI chat endpoint and
    constrained with its own `response_format: json_schema` (its GBNF grammar). A context manager; `round`
    runs one round (the same prompts, at once) so that `measure` can interleave it with ours."""

    def __init__(self, binary: str, args: argparse.Namespace) -> None:
        self.args = args
        path = embedded_gguf_path() if args.model == "embedded" else args.model
        self.port, self.slots = 8765, max(args.batch)
        command = [binary, "-m", str(path), "--port", str(self.port), "-np", str(self.slots)]
        command += ["-c", str(2048 * self.slots), "-t", str(os.cpu_count() or 1), "--no-webui"]
        self._server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._url = f"http://127.0.0.1:{self.port}"
        self._client = httpx.Client(timeout=600)
        self._pool = ThreadPoolExecutor(self.slots)

    def __enter__(self) -> LlamaServerPeer:
        for _ in range(600):
            try:
                if self._client.get(self._url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self._ask(0, False)  # warm-up
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown()
        self._client.close()
        self._server.terminate()
        self._server.wait(30)

    def _ask(self, k: int, constrained: bool) -> tuple[int, str]:
        prompt, schema = TASKS[k % len(TASKS)]
        body = {
            "messages": [{"role": "user", "content": prompt + (" Answer with JSON only." * constrained)}],
            "max_tokens": self.args.max_tokens,
            "temperature": 0.0,
        }
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
        reply = self._client.post(self._url + "/v1/chat/completions", json=body).json()
        return reply["usage"]["completion_tokens"], reply["choices"][0]["message"]["content"]

    def round(self, ks: range, constrained: bool) -> tuple[int, float, list[str]]:
        """(completion tokens, seconds, texts) of the prompts `ks` asked at once."""
        start = time.perf_counter()
        answers = list(self._pool.map(lambda k: self._ask(k, constrained), ks))
        return (
            sum(tokens for tokens, _ in answers),
            time.perf_counter() - start,
            [text for _, text in answers],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtimes", default="torch", help=f"comma-separated, of {', '.join(RUNTIMES)}")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (requests at once)")
    parser.add_argument("--prompts", type=int, default=8, help="number of prompts (cycling over the tasks)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="embedded", help="'embedded' (default), a .gguf or a model folder")
    parser.add_argument("--overlap", default="on", help="on, off or on,off: masks during the forward pass")
    parser.add_argument("--fast-forward", default="on", help="on, off or on,off: forced tokens not sampled")
    parser.add_argument("--slow-forward-ms", type=float, default=0.0, help="extra GIL-free wait per step")
    parser.add_argument("--peer-llama-server", metavar="PATH", help="llama.cpp's llama-server binary")
    args = parser.parse_args(argv)
    args.batch = [int(b) for b in args.batch.split(",")]
    runtimes = args.runtimes.split(",")
    overlaps = [value == "on" for value in args.overlap.split(",")]

    print(
        f"e2e: model={args.model} prompts={args.prompts} max_tokens={args.max_tokens} greedy "
        f"slow_forward_ms={args.slow_forward_ms}",
        flush=True,
    )
    first, batch = runtimes[0], args.batch[0]
    paired = "llama.cpp" if "llama.cpp" in runtimes else first  # the runtime the peer is interleaved with
    measured, peer = {}, {}
    with LlamaServerPeer(args.peer_llama_server, args) if args.peer_llama_server else nullcontext() as server:
        for r in runtimes:
            for o in overlaps:
                with_peer = server if (r, o) == (paired, overlaps[0]) else None
                measured[r, o], found = measure(r, o, args, with_peer)
                peer = peer or found
    results = {runtime: measured[runtime, overlaps[0]] for runtime in runtimes}
    if len(overlaps) == 2:
        for runtime in runtimes:
            for size in args.batch:
                on, off = measured[runtime, True][size], measured[runtime, False][size]
                gain = on["constrained"] / max(off["constrained"], 1e-9)
                print(
                    f"overlap gain {runtime} batch {size}: constrained {gain:.3f}x; constrained/free "
                    f"{on['constrained'] / max(on['free'], 1e-9):.3f} with overlap, "
                    f"{off['constrained'] / max(off['free'], 1e-9):.3f} without"
                )
    if args.fast_forward == "on,off":
        on = results[first][batch]
        print(
            f"forward passes per constrained token (per row): {on['passes_per_token']:.3f} with FF, "
            f"{on['no_ff_passes_per_token']:.3f} without"
        )
        print(
            f"fast_forward: on_tok_s={on['constrained']:.1f} off_tok_s={on['no_ff']:.1f} "
            f"speedup={on['constrained'] / max(on['no_ff'], 1e-9):.3f}"
        )
    if peer:
        free = results[paired][batch]["free"] / max(peer[batch]["free"], 1e-9)
        print(f"ours_{paired}_free / llama_server_free = {free:.2f}")
        ratio = results[paired][batch]["constrained"] / max(peer[batch]["constrained"], 1e-9)
        print(f"ours_{paired}_constrained / llama_server_constrained = {ratio:.2f}")
    elif len(runtimes) > 1:
        for other in runtimes[1:]:
            ratio = results[other][batch]["constrained"] / max(results[first][batch]["constrained"], 1e-9)
            print(f"ours_{other}_constrained / ours_{first}_constrained = {ratio:.2f}")
    else:
        ratio = results[first][batch]["constrained"] / max(results[first][batch]["free"], 1e-9)
        print(f"constrained/unconstrained={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
