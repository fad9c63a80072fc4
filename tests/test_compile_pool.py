"""Schema compiles in worker processes: same grammars and errors as in-process, hard deadlines, and hostile
automata refused by the worker, never by the serving process."""

from __future__ import annotations

import os
import time

import pytest

from constrained.compile_pool import IsolatedCompiler, check_automaton
from constrained.token_index import LazyDFA
from grammars import JsonSchemaOptions, SchemaError, compile_json_schema

SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}, "required": ["a"]},
    {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"},
    {"type": "string", "pattern": "^[a-z]+$", "maxLength": 4},
    {  # complements: each branch minus the other (a pattern complement in the key's value)
        "type": "object",
        "oneOf": [
            {"properties": {"k": {"type": "string", "pattern": "^a"}}, "required": ["k"]},
            {"properties": {"k": {"type": "string", "maxLength": 3}}, "required": ["k"]},
        ],
    },
]
# A nested-quantifier pattern intersected with a huge minLength: the walk takes a millisecond, but the
# automaton's productivity check searches the intersection (seconds, then "intersection too large").
HOSTILE_AUTOMATON = {"type": "string", "pattern": "(((a+)+)+)+$", "minLength": 5_000}  # ~1.5 s to build here
GRACE_S = 0.5


@pytest.fixture(scope="module")
def pool():
    compiler = IsolatedCompiler(workers=1, grace_s=GRACE_S)
    yield compiler
    compiler.close()


def test_same_grammar_as_in_process(pool):
    for schema in SCHEMAS:
        assert pool(schema).grammar == compile_json_schema(schema).grammar
    exactly_one = LazyDFA(pool(SCHEMAS[3]).grammar)
    assert [exactly_one.accepts(f'{{"k":"{k}"}}') for k in ("abcd", "ab", "xy", "xyzw")] == [
        True,
        False,
        True,
        False,
    ]


def test_schema_errors_come_back_whole(pool):
    with pytest.raises(SchemaError) as info:
        pool({"properties": {"x": {"type": "string", "pattern": "(a)\\1"}}})
    assert (info.value.keyword, info.value.pointer) == ("pattern", "/properties/x")


def test_walk_past_its_deadline_is_stopped(pool):
    """The registry scan of a huge schema does not look at the clock: the worker's alarm (or the kill)
    bounds it."""
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300_000)}}
    start = time.monotonic()
    with pytest.raises(SchemaError, match="compilation exceeds"):
        pool(huge, JsonSchemaOptions(compile_seconds=0.05))
    assert time.monotonic() - start < 0.05 + GRACE_S + 0.3
    assert pool(SCHEMAS[0]).grammar == compile_json_schema(SCHEMAS[0]).grammar


def test_hostile_automaton_is_refused_by_the_worker_within_budget(pool):
    """The automaton initialisation runs in the worker under the same deadline: over budget, it is a
    SchemaError from the worker (stopped by its alarm: the same process serves the next schema)."""
    budget = 0.3
    pid = pool._workers[0]._process.pid
    start = time.monotonic()
    with pytest.raises(SchemaError, match=r"compilation exceeds 0.3 s \(building the automaton\)"):
        pool(HOSTILE_AUTOMATON, JsonSchemaOptions(compile_seconds=budget))
    assert time.monotonic() - start < budget + GRACE_S
    assert pool._workers[0]._process.pid == pid
    assert pool(SCHEMAS[2]).grammar == compile_json_schema(SCHEMAS[2]).grammar


def test_hostile_automaton_is_slow_in_process():
    """What the worker spares the serving process: the same automaton built in-process takes longer than the
    budget above (or fails)."""
    grammar = compile_json_schema(HOSTILE_AUTOMATON).grammar
    start = time.monotonic()
    try:
        LazyDFA(grammar)
    except ValueError:
        pass
    assert time.monotonic() - start > 0.3


def test_automaton_failures_are_schema_errors(pool):
    empty = {"type": "string", "pattern": "^a$", "minLength": 3}  # the walk accepts it; the language is empty
    with pytest.raises(SchemaError, match="cannot build a token automaton: the grammar admits no output"):
        check_automaton(compile_json_schema(empty).grammar)
    with pytest.raises(SchemaError, match="cannot build a token automaton"):
        pool(empty)


class _Sleeps:
    """Unpickles, in the worker, as a 30 s sleep: a worker that does not answer at all."""

    def __reduce__(self):
        return time.sleep, (30,)


def test_silent_worker_is_killed_and_replaced(pool):
    pid = pool._workers[0]._process.pid
    start = time.monotonic()
    with pytest.raises(SchemaError, match="compilation exceeds"):
        pool(_Sleeps(), JsonSchemaOptions(compile_seconds=0.05))
    assert time.monotonic() - start < 0.05 + GRACE_S + 0.3
    assert pool._workers[0]._process.pid != pid
    assert pool(SCHEMAS[0]).grammar == compile_json_schema(SCHEMAS[0]).grammar


class _Exits:
    """Unpickles, in the worker, as an exit: a worker that dies (out of memory, a crash)."""

    def __reduce__(self):
        return os._exit, (3,)


def test_dead_worker_is_replaced(pool):
    with pytest.raises(SchemaError, match="the compiler process died"):
        pool(_Exits())
    assert pool(SCHEMAS[0]).grammar == compile_json_schema(SCHEMAS[0]).grammar
