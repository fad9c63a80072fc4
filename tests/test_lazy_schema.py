"""Lazy JSON-Schema compiles: which sub-schemas wait (`grammars.deferral`), that they are compiled only when
the automaton reaches them, and that the language is the eager compile's (same accept/reject everywhere)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from constrained.grammar import GrammarCompiler
from constrained.instances import InstanceGenerator
from constrained.token_index import LazyDFA
from constrained.token_index.errors import RegexUnsupported
from constrained.tokenizer_info import TokenizerInfo
from grammars import SchemaError, compile_json_schema
from grammars.deferral import Deferral
from grammars.ir import LazyGrammar, RuleGrammar
from grammars.json_schema import _HANDLED, JsonSchemaOptions, _Compiler
from grammars.refs import ROOT_URI

MASKBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "maskbench"

INT_OR_STRING = {"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]}
META = {
    "type": "object",
    "properties": {
        "name": {"type": ["string", "null"]},
        "labels": {"type": ["object", "null"], "additionalProperties": {"type": ["string", "null"]}},
        "generation": {"type": ["integer", "null"], "minimum": 0},
    },
    "additionalProperties": False,
}
PORT = {
    "type": "object",
    "properties": {
        "port": {"type": "integer", "minimum": 1},
        "target": {"$ref": "#/$defs/IntOrString"},
        "protocol": {"type": "string", "enum": ["TCP", "UDP"]},
    },
    "required": ["port"],
    "additionalProperties": False,
}
# a Kubernetes-shaped resource: every property value is one the walk may leave for later
RESOURCE = {
    "$defs": {"IntOrString": INT_OR_STRING, "Meta": META, "Port": PORT},
    "type": "object",
    "properties": {
        "apiVersion": {"type": ["string", "null"], "enum": ["v1"]},
        "kind": {"type": ["string", "null"], "enum": ["Service"]},
        "metadata": {"$ref": "#/$defs/Meta"},
        "spec": {
            "type": "object",
            "properties": {
                "ports": {"type": ["array", "null"], "items": {"$ref": "#/$defs/Port"}},
                "selector": {"type": "object", "additionalProperties": {"type": "string"}},
                "replicas": {"$ref": "#/$defs/IntOrString"},
                "when": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": False,
        },
    },
    "required": ["apiVersion", "kind"],
    "additionalProperties": False,
}


def _ready(schema, pointer: str = "") -> bool:
    """`Deferral.ready` of the sub-schema of RESOURCE-like document `schema` at `pointer`."""
    compiler = _Compiler(schema, JsonSchemaOptions())
    node = compiler.registry.resolve("#" + pointer, ROOT_URI, "")
    return Deferral(compiler.registry, frozenset(_HANDLED)).ready(node)


@pytest.mark.parametrize(
    "sub",
    [
        {"type": "string", "maxLength": 3},
        {"type": ["string", "null"], "enum": ["v1"]},
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]},
        {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
        {"anyOf": [{"type": "string"}, {"type": "object"}]},
        INT_OR_STRING,
        {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "integer"}]},  # disjoint types
        {"type": "string", "format": "unknown-format"},
        {"type": "string", "pattern": "^[a-z]+(-[a-z]+)*$"},
        {"type": "integer", "minimum": 1, "maximum": 65535},
        {"type": "integer", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1.5},  # 1
        {"type": "number", "minimum": 0.25, "maximum": 0.25},
        True,
    ],
)
def test_ready_sub_schemas(sub) -> None:
    assert _ready({"properties": {"x": sub}}, "/properties/x")


@pytest.mark.parametrize(
    "sub",
    [
        {"type": "string", "pattern": "^a+$", "maxLength": 0},  # a pattern beside lengths may conflict
        {"type": "string", "pattern": "(?<=a)b"},  # lookbehind: refused by the walk
        {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2},  # no integer between
        {"type": "number", "minimum": 1, "exclusiveMaximum": 1},
        {"type": "array", "uniqueItems": True},
        {"type": "integer", "minimum": 5, "maximum": 1},  # bounds on both sides: maybe empty
        {"type": "string", "minLength": 4, "maxLength": 2},  # empty
        {"type": "string", "format": "date", "maxLength": 4},  # a known format beside lengths
        {"type": "object", "properties": {"a": False}, "required": ["a"]},  # a required value is false
        {"type": "object", "additionalProperties": False, "required": ["zz"]},  # undeclared, not allowed
        {"type": "integer", "enum": ["a"]},  # no value of the type
        {"oneOf": [{"type": "number"}, {"type": "integer"}]},  # integer within number: refused
        {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "string"}]},  # overlapping branches
        {"allOf": [{"type": "string"}]},
        {"$ref": "#/properties/x", "type": "object"},  # a cycle (and a $ref with a sibling)
        {"type": "object", "properties": {"self": {"$ref": "#/properties/x"}}},  # recursion
        {"type": "object", "properties": {"deep": {"type": "string", "multipleOf": 2}}},  # unsafe below
        False,
    ],
)
def test_not_ready_sub_schemas(sub) -> None:
    assert not _ready({"properties": {"x": sub}}, "/properties/x")


def test_lazy_compile_defers_and_the_automaton_writes_only_what_it_reaches() -> None:
    lazy = compile_json_schema(RESOURCE, lazy=True).grammar
    assert isinstance(lazy, LazyGrammar)
    waiting = set(lazy.pending)
    api_version, kind, metadata, spec = sorted(waiting)  # the values of the four properties, in order
    dfa = LazyDFA(lazy)
    assert dfa.accepts('{"apiVersion":"v1","kind":"Service"}')
    assert set(lazy.pending) == {metadata, spec}  # the two values reached were written
    assert dfa.accepts('{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}}')
    assert spec in lazy.pending and metadata not in lazy.pending
    assert len(lazy.pending) == 3  # metadata's own labels and generation wait in turn


def _texts(schema, n: int = 30) -> list[tuple[str, bool]]:
    generator = InstanceGenerator(schema)
    valid = generator.valid(n, seed=1)
    return [(i.text, True) for i in valid] + [(m.text, False) for m in generator.invalid(n, valid=valid)]


def test_lazy_language_is_the_eager_one() -> None:
    eager = LazyDFA(compile_json_schema(RESOURCE).grammar)
    lazy = LazyDFA(compile_json_schema(RESOURCE, lazy=True).grammar)
    texts = _texts(RESOURCE)
    assert any(not ok for _, ok in texts)
    for text, ok in texts:
        assert eager.accepts(text) == lazy.accepts(text) == ok, text


def test_lazy_grammar_completes_and_pickles_as_a_rule_grammar() -> None:
    compiled = compile_json_schema(RESOURCE, lazy=True)
    restored = pickle.loads(pickle.dumps(compiled.grammar))
    assert isinstance(restored, RuleGrammar)
    assert not compiled.grammar.pending
    assert restored == compiled.grammar.complete()
    dfa = LazyDFA(restored)
    for text, ok in _texts(RESOURCE, 10):
        assert dfa.accepts(text) == ok
    assert compiled.regex  # the regex export completes the grammar first


def test_refusals_are_found_before_any_token() -> None:
    deep = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": deep}}}}
    with pytest.raises(SchemaError) as err:
        compile_json_schema(schema, lazy=True)
    assert err.value.keyword == "uniqueItems" and "/properties/a/properties/b" in str(err.value)


def test_grammar_compiler_is_lazy_and_its_source_complete(tokenizer) -> None:
    info = TokenizerInfo.from_huggingface(tokenizer)
    grammar = GrammarCompiler(info).compile_json_schema(RESOURCE)
    assert isinstance(grammar.rule_grammar, LazyGrammar)
    assert grammar.rule_grammar.pending
    matcher = grammar.matcher()
    text = '{"apiVersion":"v1","kind":"Service","spec":{"replicas":3}}'
    assert matcher.accept_tokens(tokenizer.encode(text, add_special_tokens=False))
    assert matcher.can_terminate()
    source = grammar.source
    assert isinstance(source, RuleGrammar) and not grammar.rule_grammar.pending


def _outcome(dfa: LazyDFA, text: str) -> bool | str:
    try:
        return dfa.accepts(text)
    except RegexUnsupported as exc:  # a search or size budget: both compiles must hit it alike
        return type(exc).__name__


@pytest.mark.skipif(not MASKBENCH.is_dir(), reason="MaskBench corpus not present")
def test_lazy_and_eager_agree_on_maskbench_instances() -> None:
    checked = deferred = 0
    for path in sorted(MASKBENCH.glob("*.jsonl")):
        with path.open() as fh:
            for _, line in zip(range(15), fh, strict=False):
                record = json.loads(line)
                try:
                    eager = LazyDFA(compile_json_schema(record["schema"]).grammar)
                except (SchemaError, RegexUnsupported) as exc:
                    with pytest.raises(type(exc)):
                        LazyDFA(compile_json_schema(record["schema"], lazy=True).grammar)
                    continue
                lazy_grammar = compile_json_schema(record["schema"], lazy=True).grammar
                deferred += isinstance(lazy_grammar, LazyGrammar)
                lazy = LazyDFA(lazy_grammar)
                for test in record["tests"]:
                    text = json.dumps(test["data"], separators=(",", ":"))
                    assert _outcome(lazy, text) == _outcome(eager, text), (record["id"], text[:200])
                    checked += 1
    print(f"{checked} instances, {deferred} lazy grammars")
    assert checked > 200 and deferred > 10
