"""The `constrained serve` sub-command, contributed by this package to the `constrained` command line.

Contract: `register(commands)` adds the `serve` parser (model, address, API key and every `Limits` field as a
flag) to the command line's sub-parsers and returns its handler, which serves until interrupted. It is
declared as the `serve` entry point of the `constrained.commands` group (pyproject.toml), so the command line
in `constrained/` never imports this package.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from constrained.runtimes import RUNTIMES
from server.limits import Limits

LIMIT_FLAGS = (
    ("max_body_bytes", "largest request body"),
    ("max_messages", "most messages per request"),
    ("max_schema_bytes", "largest schema (serialized)"),
    ("max_json_depth", "deepest nesting of arrays/objects in a request body"),
    ("max_queue", "requests waiting before 429"),
    ("max_automaton_states", "automaton states per grammar"),
    ("compile_timeout_s", "compile time budget, seconds"),
    ("request_timeout_s", "per-request time limit, seconds"),
)


def register(commands) -> Callable[[argparse.Namespace], None]:
    serve = commands.add_parser("serve", help="serve a model through an OpenAI-compatible API")
    serve.add_argument(
        "--model", default="embedded", help="'embedded' (default), a model folder or a .gguf file"
    )
    serve.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the model: llama.cpp (a .gguf, weights quantized) or torch; auto (default) = "
        "llama.cpp for a .gguf when llama-cpp-python is installed",
    )
    serve.add_argument(
        "--no-fast-forward",
        dest="fast_forward",
        action="store_false",
        help="sample every token, even those the constraint forces (default: forced tokens are appended "
        "without a forward pass each)",
    )
    serve.add_argument(
        "--reasoning-parser",
        choices=["think"],
        help="the model thinks first: <think>…</think> is free (bounded by reasoning_effort), the "
        "constraint applies after it, and responses carry it as reasoning_content",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--max-batch-size", type=int, default=32, help="sequences decoded together (default 32)"
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("CONSTRAINED_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 (default: $CONSTRAINED_API_KEY; none = open)",
    )
    defaults = Limits()
    for field, help_text in LIMIT_FLAGS:
        default = getattr(defaults, field)
        serve.add_argument(
            "--" + field.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{help_text} ({default})",
        )
    return run


def run(args: argparse.Namespace) -> None:
    # OMP_WAIT_POLICY is left to the environment (issue 15, 2 cores, llama.cpp runtime, bench/load.py
    # --hostile): PASSIVE only helps while another program saturates the cores; on an otherwise idle machine
    # it makes every request ~1.6x slower (p50 0.95 s -> 1.55 s), and the hostile ratio is met without it.
    from constrained.reasoning import Reasoning
    from server.serving import serve

    limits = Limits(**{name: getattr(args, name) for name in Limits.__dataclass_fields__})
    serve(
        args.model,
        args.host,
        args.port,
        runtime=args.runtime,
        fast_forward=args.fast_forward,
        reasoning=Reasoning() if args.reasoning_parser else None,
        max_batch_size=args.max_batch_size,
        limits=limits,
        api_key=args.api_key,
    )
