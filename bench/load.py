"""Load generator for the OpenAI-compatible server, on loopback, bounded in request count and time.

    python bench/load.py [--url http://127.0.0.1:PORT] [--concurrency 1,4,16,32] [--requests N]
                         [--max-tokens M] [--soak SECONDS]

Without `--url` it starts `python -m server` on a free port (the embedded model) and reports the server's peak
resident memory (VmHWM). The request mix: json_schema, json_object, tools, streaming and plain requests, with
10% malformed ones that must get a 4xx while the rest succeed. Per concurrency level it prints requests ok /
failed, completion tokens/s, TTFT and latency p50/p99 and the server's peak RSS; the last line is
`c16: ok=… failed=… tok_s_ratio_vs_c1=…`. `--soak S` then runs the highest level for S seconds, printing RSS
every 10 s, to show memory stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
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


async def one(client: httpx.AsyncClient, url: str, body: dict, malformed: bool, level: Level) -> None:
    start = time.perf_counter()
    try:
        if body.get("stream"):
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


async def run_level(base: str, model: str, concurrency: int, requests: int, max_tokens: int) -> Level:
    level = Level(concurrency)
    url = base + "/v1/chat/completions"
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:

        async def guarded(number: int) -> None:
            async with gate:
                body, malformed = build_request(number, model, max_tokens)
                await one(client, url, body, malformed, level)

        start = time.perf_counter()
        await asyncio.gather(*(guarded(i) for i in range(requests)))
        level.wall = time.perf_counter() - start
    return level


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one with the embedded model)")
    parser.add_argument("--server-pid", type=int, help="pid of the server at --url, for its peak memory")
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of soak at the highest level")
    args = parser.parse_args()
    process = None
    base, pid = args.url, args.server_pid
    if base is None:
        process, base = start_server()
        pid = process.pid
    try:
        model = httpx.get(base + "/v1/models", timeout=10).json()["data"][0]["id"]
        levels = []
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            level = asyncio.run(run_level(base, model, concurrency, args.requests, args.max_tokens))
            levels.append(level)
            tok_s = level.tokens / level.wall
            print(
                f"c{concurrency}: ok={level.ok} rejected_4xx={level.rejected_as_expected} "
                f"failed={level.failed} tok_s={tok_s:.1f} "
                f"ttft_p50={pct(level.ttft, 0.5):.2f}s ttft_p99={pct(level.ttft, 0.99):.2f}s "
                f"latency_p50={pct(level.latency, 0.5):.2f}s latency_p99={pct(level.latency, 0.99):.2f}s "
                f"peak_rss={peak_rss_mib(pid):.0f}MiB",
                flush=True,
            )
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
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
