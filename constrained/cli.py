"""The `constrained` command line: `constrained serve ...`.

Contract: every sub-command has `--help`; errors print one clear line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="constrained", description="Schema-guaranteed JSON from LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model through an OpenAI-compatible API")
    serve.add_argument(
        "--model", default="embedded", help="'embedded' (default), a model folder or a .gguf file"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--max-batch-size", type=int, default=32, help="sequences decoded together (default 32)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            from constrained.serving import serve

            serve(args.model, args.host, args.port, max_batch_size=args.max_batch_size)
    except (FileNotFoundError, ValueError) as exc:
        print(f"constrained: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
