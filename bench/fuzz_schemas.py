"""Schema fuzzing: hypothesis strategies that mutate schemas, and a worker process that judges each one.

- `fuzzed_schemas(seeds, enum_max)` draws a seed schema and applies 1-3 mutations at random sub-schemas:
  type confusion, huge/negative/float/non-finite bounds, unicode and control characters in property names
  and patterns, cyclic and dangling `$ref`s, boolean schemas, contradictory keywords, enormous enums, deep
  nesting.
- `near_misses(instance)` draws small edits of a valid instance (another type, a key dropped or added, a
  number or string nudged); the caller keeps those the `jsonschema` validator rejects.
- `draw_instances(schema, count, seed)`: up to `count` instances from hypothesis-jsonschema (an independent
  generator) that `jsonschema` validates, and a near miss of each that it rejects, as compact JSON texts.
- `CompileWorker` runs both in its own process (killed and restarted past the deadline). `check(schema,
  texts, timeout)`: the meta-schema check, then the compiler (`GrammarCompiler` over a byte vocabulary, which
  calls `grammars.compile_json_schema`), then each text walked byte by byte. `Outcome.kind` is `compiled`,
  `refused` (`SchemaError` / `GrammarError`), `crash` (any other exception, with its traceback) or
  `over_deadline`. `instances(schema, count, seed, timeout)`: `draw_instances`, None past the timeout.
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import jsonschema
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

SEEDS: list[Any] = [
    {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "number", "maximum": 10}, "minItems": 1, "maxItems": 4},
    {"type": "string", "pattern": "^[a-z]+[0-9]{2}$"},
    {"enum": ["red", "green", 3, None, {"a": [1]}]},
    {"anyOf": [{"type": "string", "format": "date"}, {"type": "integer", "multipleOf": 3}]},
    {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    },
    {
        "type": "object",
        "patternProperties": {"^x-": {"type": "boolean"}},
        "propertyNames": {"maxLength": 8},
        "minProperties": 1,
    },
    {"allOf": [{"type": "object", "required": ["a"]}, {"properties": {"a": {"const": 1}}}]},
    True,
]

SCHEMA_KEYWORDS_WITH_SCHEMAS = ("properties", "$defs", "definitions", "patternProperties")
BOUND_KEYWORDS = (
    "minLength maxLength minItems maxItems minProperties maxProperties minimum maximum exclusiveMinimum "
    "exclusiveMaximum multipleOf minContains maxContains"
).split()
EXTREME_NUMBERS = [-1, 0, 1, 2**31, 2**63, 10**20, 10**6, 100_000, 0.5, 1.5, 1e-300, 1e308, -1e308, -0.0]
WEIRD_CHARS = ["\x00", "\x1f", "\x7f", "\u2028", "\ud800", '"', "\\", "😀", "é", "/", "~0", "\ufeff", " "]
WEIRD_PATTERNS = [
    "(((a+)+)+)+$",
    "[",
    "\\",
    "(?<=a)b",
    "\\p{L}+",
    "a{1000000}",
    "(a|b){0,99999}",
    "^$",
    "(?i)abc",
    "\\1(a)",
    "[\\u0000-\\uffff]*",
    "\x00",
    "(?:" * 300 + "a" + ")" * 300,
]
REF_TARGETS = [
    "#",
    "#/",
    "#/$defs/missing",
    "#/properties",
    "http://example.com/x.json",
    "#anchor",
    "%25",
    "#/-",
]


# ------------------------------------------------------------------------------------------ strategies
def json_values(max_leaves: int = 6) -> st.SearchStrategy:
    """Any JSON-ish value, non-finite floats included (Python's json accepts NaN and Infinity)."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=max_leaves,
    )


def weird_text(max_size: int = 8) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(WEIRD_CHARS) | st.text(max_size=3)
    return st.lists(pieces, max_size=max_size).map("".join)


def weird_patterns() -> st.SearchStrategy[str]:
    meta = st.text(alphabet="()[]{}*+?|^$\\.-ab0:=!<>,pPdDwWsSuxcn", max_size=12)
    return st.sampled_from(WEIRD_PATTERNS) | meta | weird_text()


def numbers() -> st.SearchStrategy:
    return st.sampled_from(EXTREME_NUMBERS) | st.integers() | st.floats() | st.just(True)


def _confuse(node: Any) -> st.SearchStrategy:
    """Type confusion: one keyword's value becomes a value of another JSON type."""
    if not isinstance(node, dict) or not node:
        return json_values()
    return st.tuples(st.sampled_from(sorted(node, key=str)), json_values()).map(
        lambda kv: {**node, kv[0]: kv[1]}
    )


def _bounds(node: Any) -> st.SearchStrategy:
    base = node if isinstance(node, dict) else {}
    pairs = st.lists(st.tuples(st.sampled_from(BOUND_KEYWORDS), numbers()), min_size=1, max_size=3)
    return pairs.map(lambda kvs: {**base, **dict(kvs)})


def _names(node: Any) -> st.SearchStrategy:
    """Unicode and control characters in property names, `required` and patterns."""
    base = node if isinstance(node, dict) else {"type": "object"}
    names = st.lists(weird_text(), min_size=1, max_size=3)
    return st.tuples(names, weird_patterns(), st.booleans()).map(
        lambda t: {
            **base,
            "properties": {name: {"type": "string", "pattern": t[1]} for name in t[0]},
            "required": t[0],
            "patternProperties": {t[1]: True},
            "additionalProperties": t[2],
        }
    )


def _pattern(node: Any) -> st.SearchStrategy:
    return st.tuples(weird_patterns(), st.sampled_from(["date", "email", "uuid", "nope", "regex"])).map(
        lambda t: {"type": "string", "pattern": t[0], "format": t[1]}
    )


def _refs(node: Any) -> st.SearchStrategy:
    """Cyclic and dangling references."""
    cyclic = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    self_loop = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
    mutual = {"anyOf": [{"$ref": "#"}, {"type": "null"}], "not": {"$ref": "#"}}
    dangling = (st.sampled_from(REF_TARGETS) | weird_text()).map(lambda ref: {"$ref": ref})
    return st.sampled_from([cyclic, self_loop, mutual, {"$ref": 5}]).map(copy.deepcopy) | dangling


def _boolean(node: Any) -> st.SearchStrategy:
    return st.booleans() | st.just({"not": True}) | st.just({"not": False})


CONTRADICTIONS: list[Any] = [
    {"type": "integer", "minimum": 5, "maximum": 4},
    {"type": "string", "minLength": 3, "maxLength": 2},
    {"type": "array", "minItems": 3, "maxItems": 1},
    {"type": [], "const": 1},
    {"type": "string", "const": 5},
    {"enum": []},
    {"allOf": [{"type": "string"}, {"type": "number"}]},
    {"type": "object", "required": ["a"], "additionalProperties": False},
    {"type": "object", "required": ["a"], "properties": {"a": False}},
    {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    {"type": "integer", "multipleOf": 0.1, "minimum": 0.01, "maximum": 0.09},
    {"not": {}},
    {"type": "object", "maxProperties": 0, "minProperties": 1},
    {"type": "array", "prefixItems": [{"type": "string"}], "items": False, "minItems": 2},
    {"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1},
    {"type": "array", "uniqueItems": True, "items": {"enum": [1]}, "minItems": 2},
]


def _contradiction(node: Any) -> st.SearchStrategy:
    return st.sampled_from(CONTRADICTIONS).map(copy.deepcopy)  # a fresh copy: later mutations edit it


def _enum(enum_max: int) -> Callable[[Any], st.SearchStrategy]:
    def enormous(node: Any) -> st.SearchStrategy:
        size = st.integers(1, enum_max)
        return size.map(lambda n: {"enum": [f"value-{i}-{'x' * (i % 7)}" for i in range(n)] + [n, None]})

    return enormous


def _nest(node: Any) -> st.SearchStrategy:
    """Wrap the node in up to 400 levels of properties/items/anyOf/allOf/not."""
    wrappers = {
        "properties": lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]},
        "items": lambda s: {"type": "array", "items": s, "minItems": 1},
        "anyOf": lambda s: {"anyOf": [s, {"type": "null"}]},
        "allOf": lambda s: {"allOf": [s]},
        "not": lambda s: {"not": {"not": s}},
    }

    def wrap(args: tuple[str, int]) -> Any:
        out = node
        for _ in range(args[1]):
            out = wrappers[args[0]](out)
        return out

    return st.tuples(st.sampled_from(sorted(wrappers)), st.integers(1, 400)).map(wrap)


def mutations(enum_max: int) -> list[Callable[[Any], st.SearchStrategy]]:
    return [_confuse, _bounds, _names, _pattern, _refs, _boolean, _contradiction, _enum(enum_max), _nest]


def subschema_paths(schema: Any, path: tuple = (), depth: int = 0) -> Iterator[tuple]:
    """Paths (key tuples) of the schema and of its sub-schemas, shallow ones only (depth < 6)."""
    yield path
    if not isinstance(schema, dict) or depth >= 6:
        return
    for key in ("items", "not", "additionalProperties", "if", "then", "else", "contains", "propertyNames"):
        if key in schema:
            yield from subschema_paths(schema[key], (*path, key), depth + 1)
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield from subschema_paths(sub, (*path, key, i), depth + 1)
    for key in SCHEMA_KEYWORDS_WITH_SCHEMAS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield from subschema_paths(sub, (*path, key, name), depth + 1)


def replace_at(schema: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = schema
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return schema


def get_at(schema: Any, path: tuple) -> Any:
    for key in path:
        schema = schema[key]
    return schema


@st.composite
def fuzzed_schemas(draw: st.DrawFn, seeds: list[Any] | None = None, enum_max: int = 2_000) -> Any:
    """A seed schema with 1-3 mutations applied at random sub-schemas."""
    schema = copy.deepcopy(draw(st.sampled_from(seeds or SEEDS)))
    kinds = mutations(enum_max)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(subschema_paths(schema))))
        mutate = draw(st.sampled_from(kinds))
        # Mutations build new containers around the node (never editing it), so no copy is needed; deep
        # copies would recurse (and a RecursionError's depth varies between hypothesis' replays).
        schema = replace_at(schema, path, draw(mutate(get_at(schema, path))))
    return schema


def _nudge(value: Any) -> st.SearchStrategy:
    """Small edits of one value: another type, a bound crossed, a member dropped or added."""
    options = [json_values(3)]
    if isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int | float):
        options.append(st.sampled_from([value + 1, value - 1, value + 0.5, -value, str(value)]))
    elif isinstance(value, str):
        options.append(st.sampled_from([value + "x", value[:-1], "", value * 2, 1]))
    elif isinstance(value, list):
        options.append(st.sampled_from([value[:-1], [*value, value[-1] if value else 0], [*value, None]]))
    elif isinstance(value, dict):
        dropped = [{k: v for k, v in value.items() if k != key} for key in value]
        options.append(st.sampled_from([*dropped, {**value, "zz": 1}, {**value, "": None}]))
    return st.one_of(options)


@st.composite
def near_misses(draw: st.DrawFn, instance: Any) -> Any:
    """`instance` with one value somewhere in it edited (see `_nudge`)."""
    paths = list(_value_paths(instance))
    path = draw(st.sampled_from(paths))
    return replace_at(copy.deepcopy(instance), path, draw(_nudge(get_at(instance, path))))


def _value_paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _value_paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _value_paths(sub, (*path, i))


# ------------------------------------------------------------------------------------------ instances
SETTINGS: dict[str, Any] = dict(
    database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
)


def compact(value: Any) -> str | None:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return None


def is_valid(schema: Any, instance: Any) -> bool | None:
    """`jsonschema`'s verdict (its dialect from `$schema`), None when it cannot judge."""
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return cls(schema).is_valid(instance)
    except Exception:  # unresolvable refs, schemas it cannot read: no verdict
        return None


def draw_instances(schema: Any, count: int, seed: int) -> tuple[list[str], list[str]]:
    """(valid texts, invalid near-miss texts): up to `count` instances from hypothesis-jsonschema that
    `jsonschema` validates, and one near miss of each that it rejects. A separate hypothesis run per schema:
    its draws depend on nothing but the schema."""
    from hypothesis_jsonschema import from_schema

    valid: list[str] = []
    invalid: list[str] = []

    @hypothesis.seed(seed)
    @settings(**SETTINGS, max_examples=count)
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        instance = data.draw(from_schema(schema))
        text = compact(instance)
        if text is None or is_valid(schema, instance) is not True:
            return
        valid.append(text)
        miss = data.draw(near_misses(instance))
        miss_text = compact(miss)
        if miss_text is not None and is_valid(schema, miss) is False:
            invalid.append(miss_text)

    try:
        collect()
    except Exception:  # hypothesis-jsonschema cannot read every schema the compiler can
        pass
    return list(dict.fromkeys(valid)), list(dict.fromkeys(invalid))


# ------------------------------------------------------------------------------------------ the judge
@dataclass
class Outcome:
    kind: str  # compiled | refused | crash | over_deadline
    meta_valid: bool = True
    detail: str = ""
    accepted: list[bool] = field(default_factory=list)  # per instance sent
    seconds: float = 0.0


def judge(schema: Any, texts: list[str]) -> Outcome:
    """Meta-schema check, compile, then walk each text (compact JSON) byte by byte. Runs in the worker."""
    from constrained.grammar import GrammarError
    from grammars import InvalidSchemaError, SchemaError, check_schema

    start = time.perf_counter()
    meta_valid = True
    try:
        check_schema(schema)
    except InvalidSchemaError:
        meta_valid = False
    except Exception:
        return Outcome("crash", False, "check_schema: " + traceback.format_exc(limit=-4))
    try:
        grammar = _byte_compiler().compile_json_schema(schema)
    except (SchemaError, GrammarError) as exc:
        return Outcome("refused", meta_valid, str(exc)[:200], seconds=time.perf_counter() - start)
    except Exception:
        return Outcome("crash", meta_valid, traceback.format_exc(limit=-6))
    try:
        accepted = [_accepts(grammar, text) for text in texts]
    except Exception:
        return Outcome("crash", meta_valid, "matcher: " + traceback.format_exc(limit=-6))
    return Outcome("compiled", meta_valid, "", accepted, time.perf_counter() - start)


_COMPILER: list[Any] = []
EOS = 256


def _byte_compiler() -> Any:
    """A `GrammarCompiler` whose tokens are the 256 bytes (cache off: every schema is compiled afresh)."""
    if not _COMPILER:
        from constrained.grammar import GrammarCompiler
        from constrained.tokenizer_info import TokenizerInfo

        table = tuple(bytes([b]) for b in range(256)) + (b"",)
        info = TokenizerInfo(table, frozenset({EOS}), frozenset({EOS}), EOS + 1, "bytes")
        _COMPILER.append(GrammarCompiler(info, cache_size=0))
    return _COMPILER[0]


def _accepts(grammar: Any, text: str) -> bool:
    matcher = grammar.matcher()
    return matcher.accept_tokens(list(text.encode())) and matcher.accept_token(EOS)


def _serve(conn: Any) -> None:
    jobs = {"judge": judge, "instances": draw_instances}
    while True:
        job = conn.recv()
        if job is None:
            return
        name, args = job
        conn.send(jobs[name](*args))


class CompileWorker:
    """`judge` in a child process; a job past its deadline kills the child (restarted on the next job)."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    def _start(self, warmup_s: float = 120.0) -> None:
        """Start the child and wait for it to import the compiler (not counted against any deadline)."""
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        self._conn.send(("judge", (True, [])))
        if not self._conn.poll(warmup_s):
            raise RuntimeError(f"the fuzz worker did not start within {warmup_s} s")
        self._conn.recv()

    def check(self, schema: Any, texts: list[str], timeout: float) -> Outcome:
        """`judge(schema, texts)` in the child; `crash` if it dies, `over_deadline` past `timeout`."""
        start = time.perf_counter()
        try:
            return self._call("judge", (schema, texts), timeout)
        except EOFError as exc:
            return Outcome("crash", detail=str(exc))
        except TimeoutError:
            return Outcome(
                "over_deadline",
                detail=f"no verdict within {timeout:g} s",
                seconds=time.perf_counter() - start,
            )

    def instances(
        self, schema: Any, count: int, seed: int, timeout: float
    ) -> tuple[list[str], list[str]] | None:
        """`draw_instances` in the child; None when it dies or overruns `timeout`."""
        try:
            return self._call("instances", (schema, count, seed), timeout)
        except (EOFError, TimeoutError):
            return None

    def _call(self, name: str, args: tuple, timeout: float) -> Any:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._send((name, args))
        if self._conn.poll(timeout):
            try:
                return self._conn.recv()
            except EOFError:  # the child died (a native crash)
                code = self._proc.exitcode
                self.close()
                raise EOFError(f"worker died (exit code {code})") from None
        self.close()
        raise TimeoutError

    def _send(self, job: tuple) -> None:
        """Pickle recurses per nesting level: allow the deep schemas the fuzzer makes (~4,000 levels)."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10_000))
        try:
            self._conn.send(job)
        finally:
            sys.setrecursionlimit(limit)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None
