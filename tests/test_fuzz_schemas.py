"""Schema fuzzing with hypothesis (`bench/fuzz_schemas.py`; `bench/fuzz.py` is the large run).

Every mutated schema compiles or is refused with `SchemaError`/`GrammarError` within the deadline, in a worker
process (a hang or a native crash cannot take the test run down); when it compiles, near misses of
hypothesis-jsonschema's instances that `jsonschema` rejects are refused. Small, fixed example budgets.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bench.fuzz import Fuzzer, fuzz, signature_of
from bench.fuzz_schemas import SEEDS, CompileWorker, fuzzed_schemas
from grammars.errors import SchemaError
from grammars.json_schema import MAX_SCHEMA_DEPTH, JsonSchemaOptions, compile_json_schema

DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def worker() -> CompileWorker:
    judge = CompileWorker()
    yield judge
    judge.close()


# Compiler bugs the fuzzer found (fixed; the tests below pin them): none tolerated now.
KNOWN_CRASHES: set[str] = set()


@settings(
    max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(schema=fuzzed_schemas(enum_max=300))
def test_compile_succeeds_or_refuses_in_time(worker: CompileWorker, schema: Any) -> None:
    outcome = worker.check(schema, [], DEADLINE_S)
    if outcome.kind == "crash" and signature_of(outcome.detail) in KNOWN_CRASHES:
        return
    assert outcome.kind in ("compiled", "refused"), f"{outcome.kind}: {outcome.detail}"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"\ud800": {"type": "null"}}, "required": ["\ud800"]},
        {"const": "a\udfff"},
    ],
)
def test_lone_surrogates_compile_or_refuse(worker: CompileWorker, schema: Any) -> None:
    """JSON's "\\ud800" escape decodes to a lone surrogate: a valid JSON string, no UTF-8 text."""
    outcome = worker.check(schema, [], DEADLINE_S)
    assert outcome.kind in ("compiled", "refused"), outcome.detail


@pytest.mark.timeout(120)
def test_compiled_schemas_refuse_near_misses() -> None:
    fuzzer = Fuzzer(DEADLINE_S, instances=3)
    try:
        fuzz(fuzzer, SEEDS, n=25, seed=0, enum_max=100)
    finally:
        fuzzer.worker.close()
    print("\n" + fuzzer.summary())
    problems = {
        signature: count
        for signature, count in fuzzer.signatures.items()
        if signature.removeprefix("crashes: ") not in KNOWN_CRASHES
    }
    assert not problems, json.dumps(fuzzer.examples, indent=1)
    assert fuzzer.counts["invalid_instances"] > 0  # near misses were checked at all


@pytest.mark.parametrize("wrapper", ["properties", "items", "anyOf", "not"])
def test_deep_nesting_compiles_or_refuses(worker: CompileWorker, wrapper: str) -> None:
    """2,000 levels: `SchemaError`, never `RecursionError` (the `$ref` registry walked recursively)."""
    schema: Any = {"type": "string"}
    for _ in range(2_000):
        schema = {
            "properties": {"type": "object", "properties": {"a": schema}},
            "items": {"type": "array", "items": schema},
            "anyOf": {"anyOf": [schema, {"type": "null"}]},
            "not": {"not": {"not": schema}},
        }[wrapper]
    outcome = worker.check(schema, [], DEADLINE_S)
    assert outcome.kind in ("compiled", "refused"), outcome.detail


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": [float("inf")]},
        {"const": float("nan")},
        {"type": "number", "multipleOf": float("nan")},
        {"type": "integer", "multipleOf": float("inf")},
        {"type": "integer", "minimum": float("nan")},
    ],
    ids=["enum-inf", "const-nan", "multipleOf-nan", "multipleOf-inf", "minimum-nan"],
)
def test_non_finite_numbers_compile_or_refuse(worker: CompileWorker, schema: Any) -> None:
    """Python callers can pass NaN/inf (the server answers them with a 400 before compiling)."""
    outcome = worker.check(schema, [], DEADLINE_S)
    assert outcome.kind in ("compiled", "refused"), outcome.detail


def nested(wrapper: str, levels: int) -> Any:
    """A string schema wrapped `levels` times; the sub-schema at depth d (root: 0) is at STEP[wrapper] * d."""
    schema: Any = {"type": "string"}
    for _ in range(levels):
        schema = {
            "properties": lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]},
            "items": lambda s: {"type": "array", "items": s},
            "anyOf": lambda s: {"anyOf": [s, {"type": "null"}]},
            "allOf": lambda s: {"allOf": [s]},
            "additionalProperties": lambda s: {"type": "object", "additionalProperties": s},
        }[wrapper](schema)
    return schema


STEP = {
    "properties": "/properties/a",
    "items": "/items",
    "anyOf": "/anyOf/0",
    "allOf": "/allOf/0",
    "additionalProperties": "/additionalProperties",
}


@pytest.mark.parametrize("wrapper", sorted(STEP))
def test_nesting_error_names_limit_value_and_pointer(wrapper: str) -> None:
    """Past `max_depth` sub-schemas compiled one inside another: a `SchemaError` naming the limit, its value
    and the JSON pointer of the first sub-schema too deep (was "schema nesting too deep" at '/')."""
    compile_json_schema(nested(wrapper, MAX_SCHEMA_DEPTH - 1))  # the deepest allowed compiles
    with pytest.raises(SchemaError) as caught:
        compile_json_schema(nested(wrapper, 2_000))
    error = caught.value
    assert f"max_depth={MAX_SCHEMA_DEPTH}" in error.message
    assert error.pointer == STEP[wrapper] * MAX_SCHEMA_DEPTH
    assert f"at '{error.pointer}'" in str(error)


def test_nesting_limit_is_an_option() -> None:
    with pytest.raises(SchemaError) as caught:
        compile_json_schema(nested("properties", 20), JsonSchemaOptions(max_depth=8))
    assert "max_depth=8" in caught.value.message
    assert caught.value.pointer == "/properties/a" * 8
    compile_json_schema(nested("properties", 7), JsonSchemaOptions(max_depth=8))


def test_ref_chain_nesting_names_the_pointer() -> None:
    """A `$ref` hop is one level deeper: a long chain stops at the limit, at the target it reached."""
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(1_000)}
    defs["d1000"] = {"type": "integer"}
    with pytest.raises(SchemaError) as caught:
        compile_json_schema({"$defs": defs, "$ref": "#/$defs/d0"})
    assert f"max_depth={MAX_SCHEMA_DEPTH}" in caught.value.message
    assert caught.value.pointer == f"/$defs/d{MAX_SCHEMA_DEPTH - 1}"


def test_stack_overflow_names_the_recursion_limit_and_pointer() -> None:
    """A value nested deeper than Python's stack (in `const`), within `max_depth`: the error names Python's
    recursion limit, its value, and the sub-schema being compiled when it ran out."""
    value: Any = 1
    for _ in range(5 * sys.getrecursionlimit()):
        value = [value]
    schema = {"type": "object", "properties": {"a": {"const": value}}, "required": ["a"]}
    with pytest.raises(SchemaError) as caught:
        compile_json_schema(schema)
    message = caught.value.message
    assert "recursion limit of " in message and "max_depth=" in message, message
    assert sys.getrecursionlimit() < 2_000  # the compile raised it while it ran, not for good
    assert caught.value.pointer == "/properties/a"


def test_a_schema_too_deep_to_serialize_names_the_limit_and_pointer(tokenizer):
    """A schema the compile cache cannot even serialize (thousands deep) is a SchemaError naming the limit
    and where the nesting passes it, not a bare RecursionError."""
    from constrained.grammar import GrammarCompiler
    from constrained.tokenizer_info import TokenizerInfo
    from grammars.metaschema import MAX_DEPTH

    schema: dict = {"type": "string"}
    for _ in range(5000):
        schema = {"items": schema}
    with pytest.raises(SchemaError) as raised:
        GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer)).compile_json_schema(schema)
    assert f"limit of {MAX_DEPTH}" in raised.value.message
    assert raised.value.pointer == "/items" * MAX_DEPTH
