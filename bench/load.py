"""Load generator for the OpenAI-compatible server, on loopback, bounded in request count and time.

    python bench/load.py [--url http://127.0.0.1:PORT] [--concurrency 1,4,16,32] [--requests N]
                         [--max-tokens M] [--soak SECONDS] [--hostile [--hostile-streams K]]

Without `--url` it starts `python -m server` on a free port (the embedded model) and reports the server's peak
resident memory (VmHWM). The request mix: json_schema, json_object, tools, streaming and plain requests, with
10% malformed ones that must get a 4xx while the rest succeed. Per concurrency level it prints requests ok /
failed, completion tokens/s, TTFT and latency p50/p99 and the server's peak RSS; the last line is
`c16: ok=… failed=… tok_s_ratio_vs_c1=…`. `--soak S` then runs the highest level for S seconds, printing RSS
every 10 s, to show memory stays flat.

`--hostile` measures instead the latency of non-streamed json_schema requests (default: 24 at concurrency 4)
in two phases on the same server: alone, then while `--hostile-streams` background loops (default 1) keep
sending schemas that are over a budget and must each get a 4xx: 300,000 properties (over the body size), a
20,000-value enum (over the schema size, a new seed each time), objects nested 200 deep (over the JSON depth),
`$ref`/allOf chains that exceed the compile deadline (one checked by the compiler, one that only the compile
worker's alarm or kill stops), and the ReDoS pattern `(((a+)+)+)+$` with a huge minLength (its automaton's
initialisation is over budget: refused by the compile worker, see constrained/compile_pool.py). It checks
that every hostile request got a 4xx and no normal one failed (exit status 1 otherwise), prints ok/failed and
latency p50/p99 per phase, and last `hostile: p50_alone_ms=A p50_with_hostile_ms=B ratio=R`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
JSON_HEADERS = {"content-type": "application/json"}
PROMPTS = ["Name a city and its population.", "Describe Paris in JSON.", "Tell me about Tokyo.", "Hello!"]


@dataclass
class Level:
    concurrency: int
    ok: int = 0
    rejected_as_expected: int = 0
    failed: int = 0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)


def build_request(number: int, model: str, max_tokens: int) -> tuple[dict, bool]:
    """The number-th request of the mix and whether it is deliberately malformed."""
    rng = random.Random(number)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": number,
    }
    kind = number % 6
    if kind == 0:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    elif kind == 1:
        body["response_format"] = {"type": "json_object"}
    elif kind == 2:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    elif kind == 3:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    elif kind == 4:
        body["tools"] = [WEATHER_TOOL]
        body["tool_choice"] = "required" if number % 12 == 4 else "auto"
    if number % 10 == 7:  # 10% malformed
        body[rng.choice(["temperature", "top_p", "n"])] = 999
        return body, True
    return body, False


async def one(client: httpx.AsyncClient, url: str, body: dict | bytes, malformed: bool, level: Level) -> None:
    """Send one request (a dict, or JSON already encoded) and record its outcome in `level`."""
    start = time.perf_counter()
    try:
        if isinstance(body, dict) and body.get("stream"):
            first = None
            tokens = 0
            async with client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    return record_status(response.status_code, malformed, response.text, level)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - start
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
            level.ttft.append(first if first is not None else time.perf_counter() - start)
        else:
            if isinstance(body, bytes):
                response = await client.post(url, content=body, headers=JSON_HEADERS)
            else:
                response = await client.post(url, json=body)
            if response.status_code != 200:
                return record_status(response.status_code, malformed, response.text, level)
            tokens = response.json()["usage"]["completion_tokens"]
            level.ttft.append(time.perf_counter() - start)
        if malformed:
            level.failed += 1
            level.errors.append("malformed request was accepted")
            return
        level.ok += 1
        level.tokens += tokens
        level.latency.append(time.perf_counter() - start)
    except Exception as exc:  # a transport failure is a failed request
        level.failed += 1
        level.errors.append(repr(exc))


def record_status(status: int, malformed: bool, text: str, level: Level) -> None:
    if malformed and 400 <= status < 500:
        level.rejected_as_expected += 1
    else:
        level.failed += 1
        level.errors.append(f"{status}: {text[:200]}")


async def run_level(
    base: str, model: str, concurrency: int, requests: int, max_tokens: int, stride: int = 1
) -> Level:
    """`requests` requests of the mix, numbers 0, stride, 2·stride…; stride 6 gives only non-streamed
    json_schema requests (kind 0), never malformed ones (a multiple of 6 is never 7 mod 10)."""
    level = Level(concurrency)
    url = base + "/v1/chat/completions"
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:

        async def guarded(number: int) -> None:
            async with gate:
                body, malformed = build_request(number * stride, model, max_tokens)
                await one(client, url, body, malformed, level)

        start = time.perf_counter()
        await asyncio.gather(*(guarded(i) for i in range(requests)))
        level.wall = time.perf_counter() - start
    return level


def chained_defs(depth: int, combine) -> dict:
    """`$defs` d1…d{depth-1}, each built from a `$ref` to the previous one by `combine(ref, i)`: a few KiB of
    schema whose expansion grows exponentially."""
    defs: dict = {"d0": {"type": "integer"}}
    for i in range(1, depth):
        defs[f"d{i}"] = combine({"$ref": f"#/$defs/d{i - 1}"}, i)
    return {"$defs": defs, "$ref": f"#/$defs/d{depth - 1}"}


def hostile_schemas(seed: int) -> dict[str, dict]:
    """Schemas over one budget or another, different for every seed (a compile cache cannot absorb them)."""
    rng = random.Random(seed)
    tag = f"s{seed}"
    deep: dict = {"type": "string"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"a": deep}, "required": ["a"]}
    return {
        "enum_20k": {"enum": [f"{tag}-{rng.getrandbits(64):x}" for _ in range(20_000)]},
        "nested_200": {"title": tag, **deep},
        "compile_deadline": chained_defs(
            30,
            lambda ref, i: {
                "type": "object",
                "properties": {
                    "x": {"allOf": [ref, {"properties": {f"q{i}{tag}": ref}}]},
                    "y": {"allOf": [ref, ref]},
                },
            },
        ),
        "compile_killed": chained_defs(
            25,
            lambda ref, i: {
                "allOf": [
                    {"anyOf": [ref, {"type": "object", "properties": {f"k{i}{tag}": ref}}]},
                    {"anyOf": [ref, {"type": "object", "properties": {f"m{i}": ref}}]},
                ]
            },
        ),
        "redos_automaton": {"type": "string", "pattern": "(((a+)+)+)+$", "minLength": 100_000 + seed},
    }


def hostile_bodies(model: str, seeds: int) -> list[tuple[str, bytes]]:
    """(kind, request body) for `seeds` seeds of each hostile kind, JSON-encoded up front: encoding 9 MiB
    while measuring would stall this client's event loop and inflate the latencies it measures."""

    def encode(kind: str, schema: dict) -> bytes:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 16,
            "response_format": {"type": "json_schema", "json_schema": {"name": kind, "schema": schema}},
        }
        return json.dumps(body).encode()

    huge = encode(
        "object_300k",
        {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(300_000)}},
    )
    bodies = []
    for seed in range(seeds):
        bodies.append(("object_300k", huge))
        bodies.extend((kind, encode(kind, schema)) for kind, schema in hostile_schemas(seed).items())
    return bodies


async def hostile_load(
    url: str, bodies: list[tuple[str, bytes]], streams: int, stop: asyncio.Event, level: Level, sent: Counter
) -> None:
    """`streams` loops, each sending the next hostile body as soon as its previous one is answered, until
    `stop`; each must get a 4xx (recorded in `level` as a malformed request; a failure's error names its
    kind)."""
    async with httpx.AsyncClient(timeout=120) as client:

        async def loop(first: int) -> None:
            for number in itertools.count(first, streams):
                if stop.is_set():
                    return
                kind, body = bodies[number % len(bodies)]
                sent[kind] += 1
                failed = level.failed
                await one(client, url, body, True, level)
                if level.failed > failed:
                    level.errors[-1] = f"{kind}: {level.errors[-1]}"

        await asyncio.gather(*(loop(k) for k in range(streams)))


async def run_with_hostile(
    base: str, model: str, concurrency: int, requests: int, max_tokens: int, bodies: list, streams: int
) -> tuple[Level, Level, Counter]:
    """The json_schema requests of `run_level` while the hostile load runs: (normal, hostile, sent)."""
    stop, hostile, sent = asyncio.Event(), Level(streams), Counter()
    url = base + "/v1/chat/completions"
    task = asyncio.create_task(hostile_load(url, bodies, streams, stop, hostile, sent))
    await asyncio.sleep(1.0)  # the hostile load is under way before the first measured request
    try:
        level = await run_level(base, model, concurrency, requests, max_tokens, stride=6)
    finally:
        stop.set()
        await task  # the requests in flight are answered (each is bounded by a budget) and checked too
    return level, hostile, sent


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(1)
    process.kill()
    raise SystemExit("the server did not start within 300 s")


def describe(level: Level, pid: int | None) -> str:
    tok_s = level.tokens / level.wall if level.wall else float("nan")
    return (
        f"c{level.concurrency}: ok={level.ok} rejected_4xx={level.rejected_as_expected} "
        f"failed={level.failed} tok_s={tok_s:.1f} "
        f"ttft_p50={pct(level.ttft, 0.5):.2f}s ttft_p99={pct(level.ttft, 0.99):.2f}s "
        f"latency_p50={pct(level.latency, 0.5):.2f}s latency_p99={pct(level.latency, 0.99):.2f}s "
        f"peak_rss={peak_rss_mib(pid):.0f}MiB"
    )


def run_mix(base: str, model: str, args: argparse.Namespace, pid: int | None) -> None:
    levels = []
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        level = asyncio.run(run_level(base, model, concurrency, args.requests, args.max_tokens))
        levels.append(level)
        print(describe(level, pid), flush=True)
        for error in level.errors[:3]:
            print(f"  error: {error}", flush=True)
    if args.soak > 0:
        top = max(levels, key=lambda lv: lv.concurrency).concurrency
        end = time.time() + args.soak
        while time.time() < end:
            level = asyncio.run(run_level(base, model, top, top * 2, args.max_tokens))
            print(f"soak c{top}: ok={level.ok} failed={level.failed} rss={current_rss_mib(pid):.0f}MiB")
    base_rate = levels[0].tokens / levels[0].wall
    summary = next((lv for lv in levels if lv.concurrency == 16), levels[-1])
    ratio = (summary.tokens / summary.wall) / base_rate if base_rate else float("nan")
    print(
        f"c{summary.concurrency}: ok={summary.ok} failed={summary.failed} "
        f"tok_s_ratio_vs_c{levels[0].concurrency}={ratio:.2f}"
    )


def run_hostile(base: str, model: str, args: argparse.Namespace, pid: int | None) -> bool:
    """The two phases of `--hostile`; True when no normal request failed and every hostile one got a 4xx."""
    if "," in args.concurrency:
        raise SystemExit("--hostile takes one --concurrency level")
    concurrency = int(args.concurrency)
    bodies = hostile_bodies(model, seeds=12)
    warm = asyncio.run(run_level(base, model, concurrency, concurrency, args.max_tokens, stride=6))

    def report(label: str, level: Level) -> None:
        print(f"{label} {describe(level, pid)}", flush=True)
        for error in level.errors:
            print(f"  error: {error}", flush=True)

    for error in warm.errors:
        print(f"  warm-up error: {error}", flush=True)
    alone = asyncio.run(run_level(base, model, concurrency, args.requests, args.max_tokens, stride=6))
    report("alone", alone)
    with_hostile, hostile, sent = asyncio.run(
        run_with_hostile(
            base, model, concurrency, args.requests, args.max_tokens, bodies, args.hostile_streams
        )
    )
    report("with hostile", with_hostile)
    kinds = " ".join(f"{kind}={count}" for kind, count in sent.items())
    print(
        f"hostile x{args.hostile_streams}: sent={sum(sent.values())} "
        f"rejected_4xx={hostile.rejected_as_expected} failed={hostile.failed} ({kinds})",
        flush=True,
    )
    for error in hostile.errors:
        print(f"  hostile not rejected: {error}", flush=True)
    a, b = pct(alone.latency, 0.5) * 1000, pct(with_hostile.latency, 0.5) * 1000
    print(f"hostile: p50_alone_ms={a:.0f} p50_with_hostile_ms={b:.0f} ratio={b / a:.2f}", flush=True)
    failures = warm.failed + alone.failed + with_hostile.failed + hostile.failed
    return failures == 0 and hostile.rejected_as_expected == sum(sent.values()) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one with the embedded model)")
    parser.add_argument("--server-pid", type=int, help="pid of the server at --url, for its peak memory")
    parser.add_argument("--concurrency", help="levels (default 1,4,16,32; with --hostile: 4)")
    parser.add_argument("--requests", type=int, help="requests per level (default 32; with --hostile: 24)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of soak at the highest level")
    parser.add_argument(
        "--hostile", action="store_true", help="json_schema latency alone vs. under over-budget schemas"
    )
    parser.add_argument("--hostile-streams", type=int, default=1, help="concurrent hostile senders (1)")
    args = parser.parse_args()
    args.concurrency = args.concurrency or ("4" if args.hostile else "1,4,16,32")
    args.requests = args.requests or (24 if args.hostile else 32)
    process = None
    base, pid = args.url, args.server_pid
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`/kill: still stop the server below
    if base is None:
        process, base = start_server()
        pid = process.pid
    passed = True
    try:
        model = httpx.get(base + "/v1/models", timeout=10).json()["data"][0]["id"]
        if args.hostile:
            passed = run_hostile(base, model, args, pid)
        else:
            run_mix(base, model, args, pid)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:  # requests still decoding: do not leave it behind
                process.kill()
                process.wait()
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
