"""Schema compiles in worker processes: same grammars and errors as in-process, hard deadlines."""

from __future__ import annotations

import time

import pytest

from constrained.compile_pool import IsolatedCompiler
from grammars import JsonSchemaOptions, SchemaError, compile_json_schema

SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}, "required": ["a"]},
    {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"},
    {"type": "string", "pattern": "^[a-z]+$", "maxLength": 4},
]


@pytest.fixture(scope="module")
def pool():
    compiler = IsolatedCompiler(workers=1, grace_s=0.2)
    yield compiler
    compiler.close()


def test_same_grammar_as_in_process(pool):
    for schema in SCHEMAS:
        assert pool(schema).grammar == compile_json_schema(schema).grammar


def test_schema_errors_come_back_whole(pool):
    with pytest.raises(SchemaError) as info:
        pool({"properties": {"x": {"type": "string", "pattern": "(a)\\1"}}})
    assert (info.value.keyword, info.value.pointer) == ("pattern", "/properties/x")


def test_compile_past_its_deadline_is_killed_and_the_worker_replaced(pool):
    """The registry scan of a huge schema does not look at the clock: only the kill bounds it."""
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300_000)}}
    start = time.monotonic()
    with pytest.raises(SchemaError, match="compilation exceeds"):
        pool(huge, JsonSchemaOptions(compile_seconds=0.05))
    assert time.monotonic() - start < 0.05 + 0.2 + 0.3
    assert pool(SCHEMAS[0]).grammar == compile_json_schema(SCHEMAS[0]).grammar
