"""The `constrained` command line: `compile`, `generate`, `instances`, `bench`; `serve` comes from `server/`.

    constrained serve [--model embedded|PATH] [--host H] [--port P] [--api-key KEY] [limits ...]
    constrained compile SCHEMA.json [--tokenizer smollm2|PATH] [--explain]
    constrained compile --grammar FILE [--syntax lark|gbnf] [--start RULE] [--explain]
    constrained generate --schema S.json --prompt "..." [--max-tokens N] [--model embedded|PATH] [--seed S]
    constrained instances SCHEMA.json [-n 100] [--invalid] [--seed S] [--model ...] [--coverage]
    constrained bench NAME [ARGS...]            # runs `python -m bench.NAME ARGS...` in the source checkout

Contract: every sub-command has `--help`; errors print one clear line to stderr (`constrained: error: ...`)
and exit non-zero: 2 for bad input (unsupported or invalid schema, missing file), 1 for a failed generation.
`generate` writes only the generated text to stdout (a summary line goes to stderr).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from constrained.runtimes import RUNTIMES

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
PLUGIN_GROUP = "constrained.commands"


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _plugin_commands(commands) -> dict[str, Callable[[argparse.Namespace], None]]:
    """Sub-commands registered under the `constrained.commands` entry-point group (the server package adds
    `serve`): each entry point is `register(commands) -> handler`. Nothing here imports those packages."""
    handlers = {}
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        handlers[entry.name] = entry.load()(commands)
    return handlers


def _bench_scripts() -> list[str]:
    if not BENCH_DIR.is_dir():
        return []
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], None]]]:
    """The parser, and the handlers of the sub-commands other packages contribute (`serve`)."""
    parser = argparse.ArgumentParser(prog="constrained", description="Schema-guaranteed JSON from LLMs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = _plugin_commands(commands)
    instances = commands.add_parser(
        "instances", help="generate valid or near-miss invalid instances of a schema"
    )
    from constrained.instances import add_arguments as _instances_arguments

    _instances_arguments(instances)

    comp = commands.add_parser(
        "compile",
        help="compile a JSON schema (or a Lark / GBNF grammar) and report what is enforced",
        description="Compile a JSON schema for a tokenizer: prints grammar size, automaton size and compile "
        "time; with --explain, the keywords enforced at each JSON pointer. An unsupported keyword is an "
        "error naming the keyword and its pointer (exit 2). With --grammar, a context-free grammar instead "
        "(--explain lists its rules and terminals; an unsupported construct names the rule, exit 2).",
    )
    comp.add_argument("schema", nargs="?", help="path of a JSON schema file ('-' reads standard input)")
    comp.add_argument("--grammar", metavar="FILE", help="a grammar file instead of a schema ('-': stdin)")
    comp.add_argument(
        "--syntax", choices=("lark", "gbnf"), default="lark", help="the grammar's syntax (default lark)"
    )
    comp.add_argument("--start", help="the grammar's start rule (default: 'start' for lark, 'root' for gbnf)")
    comp.add_argument(
        "--tokenizer", default="smollm2", help="'smollm2' (the embedded model's, default) or a folder/.gguf"
    )
    comp.add_argument("--explain", action="store_true", help="list the enforced keywords per JSON pointer")
    comp.add_argument(
        "--regex", action="store_true", help="print the compiled grammar (root fragment and rules)"
    )

    gen = commands.add_parser(
        "generate",
        help="generate one constrained answer to a prompt",
        description="One-off generation through the decode engine, the chat template applied. The output "
        "always matches the schema (or regex); it is closed in time to fit --max-tokens.",
    )
    constraint = gen.add_mutually_exclusive_group()
    constraint.add_argument("--schema", help="JSON schema file the output must be an instance of")
    constraint.add_argument("--regex", help="regular expression the output must match in full")
    constraint.add_argument("--json-object", action="store_true", help="any JSON object")
    gen.add_argument("--prompt", required=True, help="the user message")
    gen.add_argument("--system", help="an optional system message")
    gen.add_argument("--max-tokens", type=int, default=256, help="completion token limit (default 256)")
    gen.add_argument("--model", default="embedded", help="'embedded' (default), a model folder or a .gguf")
    gen.add_argument("--runtime", choices=RUNTIMES, default="auto", help="llama.cpp, torch or auto (default)")
    gen.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    gen.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")

    scripts = _bench_scripts()
    bench = commands.add_parser(
        "bench",
        help="run a benchmark script (bench/NAME.py)",
        description="Run bench/NAME.py from the source checkout with the remaining arguments. Available: "
        + (", ".join(scripts) or "none (the bench/ folder is not present)")
        + ". `constrained bench NAME --help` shows a script's options.",
    )
    bench.add_argument("name", metavar="NAME", help="benchmark script name: " + (", ".join(scripts) or "-"))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return parser, plugins


# ---------------------------------------------------------------------- compile
def _read_schema(path: str):
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read schema {path}: {exc.strerror or exc}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict | bool):
        raise CLIError(f"{path}: a JSON schema is an object or a boolean, got {type(schema).__name__}")
    return schema


def _check_schema(schema) -> None:
    from grammars import InvalidSchemaError, check_schema

    try:
        check_schema(schema)
    except InvalidSchemaError as exc:
        raise CLIError(str(exc)) from None


def _read_grammar(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read grammar {path}: {exc.strerror or exc}") from None


def _compile(args: argparse.Namespace) -> None:
    from grammars import GrammarSyntaxError, SchemaError, compile_json_schema

    if (args.schema is None) == (args.grammar is None):
        raise CLIError("give either a schema file or --grammar FILE")
    if args.grammar is not None:
        source = _read_grammar(args.grammar)
    else:
        schema = _read_schema(args.schema)
        _check_schema(schema)
    from constrained.api import Compiler, load_tokenizer
    from constrained.grammar import GrammarError

    tokenizer = load_tokenizer(args.tokenizer)
    compiler = Compiler.for_tokenizer(tokenizer)
    try:
        if args.grammar is not None:
            grammar = compiler.grammar(source, syntax=args.syntax, start=args.start)
        else:
            grammar = compiler.json_schema(schema)
        start = time.perf_counter()
        grammar.matcher().fill_bitmask(_scratch(grammar), 0)  # first mask: part of the cost of a request
    except SchemaError as exc:
        raise CLIError(f"unsupported schema: {exc}") from None
    except GrammarSyntaxError as exc:
        raise CLIError(f"unsupported grammar: {exc}") from None
    except GrammarError as exc:
        raise CLIError(str(exc)) from None
    first_mask = time.perf_counter() - start
    states = getattr(grammar.index, "num_states", None)
    print(
        f"compiled in {grammar.compile_seconds * 1000:.1f} ms, first mask in {first_mask * 1000:.1f} ms "
        f"({args.tokenizer}, {grammar.info.vocab_size} tokens)"
    )
    source = grammar.source
    print(
        f"grammar: {source.size} characters in {len(source.rules)} rules ({len(source.recursive)} recursive)"
    )
    if states is not None:
        print(f"automaton: {states} states explored so far (built lazily while decoding)")
    print(f"shortest output: {grammar.min_tokens()} tokens")
    if args.explain:
        # a lazy grammar's `explain` covers only what was compiled so far: walk the whole schema for it
        explain = grammar.explain if args.grammar is not None else compile_json_schema(schema).explain
        print("enforced:")
        width = max((len(e.pointer or "/") for e in explain), default=1)
        for entry in explain:
            print(f"  {entry.pointer or '/':<{width}}  {', '.join(entry.enforced)}")
    if args.regex:
        print(source.root)
        for rule, body in enumerate(source.rules):
            print(f"(?&{rule}) = {body}")


def _scratch(grammar):
    from constrained.bitmask import allocate_bitmask

    return allocate_bitmask(1, grammar.info.vocab_size)


# ---------------------------------------------------------------------- generate
def _generate(args: argparse.Namespace) -> None:
    if args.max_tokens < 1:
        raise CLIError("--max-tokens must be at least 1")
    schema = None
    if args.schema:
        schema = _read_schema(args.schema)
        _check_schema(schema)
    from constrained.api import Compiler
    from constrained.constraints import JsonObject, JsonSchema, Regex
    from constrained.engine import (
        ChoiceDelta,
        ChoiceFinished,
        Engine,
        GenerationRequest,
        RequestFailed,
        RequestFinished,
    )
    from constrained.grammar import GrammarError
    from constrained.models import load_model
    from constrained.sampling import SamplingParams
    from grammars import SchemaError

    params = SamplingParams(temperature=args.temperature, seed=args.seed)  # validates the ranges
    loaded = load_model(args.model, runtime=args.runtime)
    tokenizer = loaded.tokenizer
    compiler = Compiler.for_tokenizer(tokenizer, vocab_size=loaded.vocab_size).grammar_compiler
    if schema is not None:
        constraint = JsonSchema(schema)
    elif args.regex is not None:
        constraint = Regex(args.regex)
    else:
        constraint = JsonObject() if args.json_object else None
    try:
        grammar = constraint.compile(compiler) if constraint is not None else None
    except SchemaError as exc:
        raise CLIError(f"unsupported schema: {exc}") from None
    except GrammarError as exc:
        raise CLIError(str(exc)) from None
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    request = GenerationRequest(prompt_ids, args.max_tokens, params, grammar=grammar)

    import queue

    events: queue.Queue = queue.Queue()
    engine = Engine(loaded.runtime(1), tokenizer, max_batch_size=1)
    try:
        engine.submit(request, events.put)
        reason, usage = "length", None
        while usage is None:
            event = events.get()
            if isinstance(event, ChoiceDelta):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ChoiceFinished):
                reason = event.finish_reason
            elif isinstance(event, RequestFinished):
                usage = event
            elif isinstance(event, RequestFailed):
                raise CLIError(f"generation failed: {event.message}", code=1)
    finally:
        engine.shutdown()
    sys.stdout.write("\n")
    print(
        f"[finish_reason={reason} prompt_tokens={usage.prompt_tokens} "
        f"completion_tokens={usage.completion_tokens}]",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------- bench
def _bench(args: argparse.Namespace) -> None:
    scripts = _bench_scripts()
    if args.name not in scripts:
        available = ", ".join(scripts) if scripts else "none: bench/ is only in the source checkout"
        raise CLIError(f"unknown benchmark {args.name!r} (available: {available})")
    command = [sys.executable, "-m", f"bench.{args.name}", *args.args]
    sys.exit(subprocess.call(command, cwd=BENCH_DIR.parent))


def main(argv: Sequence[str] | None = None) -> None:
    parser, plugins = _parser()
    args = parser.parse_args(argv)
    level = logging.INFO if args.command == "serve" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in plugins:
            plugins[args.command](args)
        elif args.command == "compile":
            _compile(args)
        elif args.command == "generate":
            _generate(args)
        elif args.command == "instances":
            from constrained.instances import run_instances

            sys.exit(run_instances(args))
        elif args.command == "bench":
            _bench(args)
    except CLIError as exc:
        print(f"constrained: error: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except (FileNotFoundError, ValueError) as exc:
        print(f"constrained: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
