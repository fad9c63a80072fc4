"""Constraint core v2: rules shared by id, recursion through the automaton's stack, real compile deadlines."""

from __future__ import annotations

import gc
import json
import time

import pytest

from constrained.grammar import GrammarCompiler, GrammarError
from constrained.token_index import LazyDFA
from grammars import JsonSchemaOptions, SchemaError, compile_json_schema
from grammars.ir import calls_in

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3},
            },
            "required": ["name"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def chain(depth: int) -> dict:
    node: dict = {"name": "leaf"}
    for _ in range(depth - 1):
        node = {"name": "n", "children": [node]}
    return node


def nested_arrays(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_recursive_ref_is_one_rule_called_by_id():
    grammar = compile_json_schema(TREE).grammar
    (node,) = grammar.recursive
    assert grammar.root == f"(?&{node})"
    assert sum(calls_in(body).count(node) for body in grammar.rules) == 2  # `[node(,node){0,2}]`


@pytest.mark.parametrize("limit", [4, 64])
def test_recursion_to_the_stack_limit_and_one_past_it(limit: int):
    dfa = LazyDFA(compile_json_schema(TREE, JsonSchemaOptions(stack_limit=limit)).grammar)
    assert dfa.accepts(compact(chain(limit)))
    assert not dfa.accepts(compact(chain(limit + 1)))


def test_default_stack_reaches_the_scale_targets():
    """`recursive` instances nest 64 deep and `{}` values 32 deep (issue targets), with room to spare."""
    assert LazyDFA(compile_json_schema(TREE).grammar).accepts(compact(chain(100)))
    dfa = LazyDFA(compile_json_schema({}).grammar)
    assert dfa.accepts(nested_arrays(100)) and dfa.accepts(compact({"a": [{"b": [[{"c": None}]]}]}))
    assert not dfa.accepts(nested_arrays(100)[:-1])


def test_json_object_nests_past_the_old_depth(tokenizer):
    from constrained.tokenizer_info import TokenizerInfo

    grammar = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer)).compile_json_object()
    text = compact({"a": [{"b": [{"c": [{"d": [{"e": 1}]}]}]}]})  # 10 containers
    matcher = grammar.matcher()
    assert matcher.accept_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.can_terminate()


def test_shared_definition_is_compiled_once():
    """A definition used 200 times: the grammar grows by a call per use, not by a copy."""
    item = {"type": "object", "properties": {f"f{i}": {"type": "string", "maxLength": 9} for i in range(8)}}

    def schema(uses: int) -> dict:
        props = {f"p{i}": {"$ref": "#/$defs/item"} for i in range(uses)}
        return {"$defs": {"item": item}, "type": "object", "properties": props, "additionalProperties": False}

    small, large = compile_json_schema(schema(2)).grammar, compile_json_schema(schema(200)).grammar
    # the definition is written once (a short member may appear twice inside it: as a start and in the chain)
    assert sum('"f3"' in body for body in (large.root, *large.rules)) <= 2
    assert large.size - small.size < 198 * 100  # a call and its layout per extra use, not a copy
    value = {"p7": {"f3": "x"}, "p199": {}}
    assert LazyDFA(large).accepts(compact(value))


def test_unproductive_recursion_is_refused(tokenizer):
    """A required child of the same type has no finite instance: refused when building the automaton."""
    from constrained.tokenizer_info import TokenizerInfo

    endless = {
        "$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}},
        "$ref": "#/$defs/n",
    }
    with pytest.raises(GrammarError, match="admits no"):
        GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer)).compile_json_schema(endless)


def test_optional_recursion_branch_kept_when_another_is_finite():
    schema = {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#"}, "minItems": 1}]}
    dfa = LazyDFA(compile_json_schema(schema).grammar)
    assert dfa.accepts("[[1],[[2,3]]]") and dfa.accepts("4") and not dfa.accepts("[]")
    assert dfa.completion(dfa.initial) == b"0"


def test_large_enum_compiles_well_within_the_deadline():
    values = [f"v{i:05d}" for i in range(20_000)]
    start = time.monotonic()
    dfa = LazyDFA(compile_json_schema({"enum": values}).grammar)
    assert time.monotonic() - start < 2.0
    assert dfa.accepts('"v12345"') and not dfa.accepts('"v20000"')


def test_compile_deadline_is_kept():
    """A schema too large for the deadline fails close to it, not after the whole walk."""
    props = {f"p{i}": {"type": "string", "pattern": f"^[a-z]{{{i % 7 + 1}}}x$"} for i in range(8_000)}
    options = JsonSchemaOptions(compile_seconds=0.2, max_grammar_size=10**9)
    gc.collect()  # the garbage of earlier tests is not this compile's time
    start = time.monotonic()
    with pytest.raises(SchemaError, match="compilation exceeds"):
        compile_json_schema({"type": "object", "properties": props}, options)
    assert time.monotonic() - start < 0.2 * 1.5


def _nested(keyword: str, leaf: dict, depth: int) -> dict:
    for _ in range(depth):
        leaf = {keyword: [leaf, {"type": "null"}]}
    return leaf


def test_enum_under_deep_any_of_is_checked_once_per_branch():
    """Enum values are checked against the nodes whose own keywords constrain them, not again against every
    enclosing `anyOf` (a 140-deep nest around a 140-value enum took 24 s, the fuzz's over-deadline case)."""
    leaf = {"enum": [f"v{i}" for i in range(140)], "minLength": 3}
    start = time.monotonic()
    dfa = LazyDFA(compile_json_schema(_nested("anyOf", leaf, 140)).grammar)
    assert time.monotonic() - start < 2.0
    assert dfa.accepts('"v12"') and dfa.accepts("null") and not dfa.accepts('"v1"')


def test_enum_checks_keep_the_deadline():
    """Value checks that are slow each (here: through 100 nested `oneOf`) stop at the deadline."""
    leaf = {"enum": [f"v{i}" for i in range(300)], "minLength": 2}
    gc.collect()
    start = time.monotonic()
    with pytest.raises(SchemaError, match="compilation exceeds"):
        compile_json_schema(_nested("oneOf", leaf, 100), JsonSchemaOptions(compile_seconds=0.2))
    assert time.monotonic() - start < 0.2 * 1.5


def test_rule_graph_agrees_with_its_regex_export_on_the_corpus():
    """For schemas without recursion or intersection, the automaton over the rule graph accepts exactly what
    Python's `re` accepts for the inlined regex export (an independent engine for the rule machinery)."""
    import re

    from tests.conftest import CORPORA

    corpus = CORPORA / "maskbench"
    if not corpus.is_dir():
        pytest.skip("MaskBench corpus not present")
    checked = 0
    for path in sorted(corpus.glob("*.jsonl")):
        for _, line in zip(range(8), path.open(), strict=False):
            record = json.loads(line)
            try:
                grammar = compile_json_schema(record["schema"]).grammar
                regex = re.compile(grammar.to_regex())
            except (SchemaError, ValueError, re.error, RecursionError):
                continue
            dfa = LazyDFA(grammar)
            for test in record["tests"]:
                text = compact(test["data"])
                assert dfa.accepts(text) == (regex.fullmatch(text) is not None), (record["id"], text[:80])
                checked += 1
    assert checked > 50


def test_long_runs_of_optional_properties_do_not_recurse_per_property(tokenizer):
    """1,000 optional properties after the required ones: the automaton's linear forms walk the run as a
    loop (was a RecursionError, a 500, at the first row past the required part)."""
    props = {f"f{k}": [{"type": "string", "maxLength": 4}, {"type": "integer"}][k % 2] for k in range(1000)}
    schema = {
        "type": "object",
        "properties": props,
        "required": list(props)[:50],
        "additionalProperties": False,
    }
    dfa = LazyDFA(compile_json_schema(schema, JsonSchemaOptions(compile_seconds=60)).grammar)
    instance = json.dumps({name: ["x", 1][k % 2] for k, name in enumerate(props)}, separators=(",", ":"))
    assert dfa.accepts(instance)
    assert not dfa.accepts(instance[:-1])


def test_optional_properties_through_shared_rules_in_a_worker_thread():
    """1,000 optional properties whose values call one definition: the layout chains rules, and the first
    row's derivatives recurse once per property (a RecursionError at 200 before `grammars.stack` raised the
    limit while the automaton computes). Run where masks are computed, in a thread; the limit is restored."""
    import sys
    import threading

    item = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    props = {f"p{i}": {"$ref": "#/$defs/item"} for i in range(1000)}
    schema = {"$defs": {"item": item}, "type": "object", "properties": props, "additionalProperties": False}
    grammar = compile_json_schema(schema, JsonSchemaOptions(compile_seconds=60)).grammar
    limit, results = sys.getrecursionlimit(), []

    def decode() -> None:
        dfa = LazyDFA(grammar)
        results.append(dfa.accepts('{"p7":{"a":1},"p999":{}}'))
        results.append(dfa.accepts('{"p999":{},"p7":{}}'))

    worker = threading.Thread(target=decode)
    worker.start()
    worker.join()
    assert results == [True, False]
    assert sys.getrecursionlimit() == limit
