"""grammars: every supported keyword is enforced exactly, every unsupported one is rejected by name."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from constrained.token_index import LazyDFA
from grammars import CompiledSchema, JsonSchemaOptions, SchemaError, compile_json_schema

OBJ = {"type": "object"}

# (schema, instances that must match, instances that must not match)
CASES: list[tuple[dict | bool, list, list]] = [
    ({"type": "null"}, [None], [0, "", False]),
    ({"type": "boolean"}, [True, False], [None, 0]),
    ({"type": "integer"}, [0, -7, 123456], [1.5, "1", None]),
    ({"type": "number"}, [0, -1.5, 3.25, 1e-05, 12], ["1", None]),
    ({"type": "string"}, ["", "abc", 'é\n"\\/', "😀"], [1, None]),
    ({"type": ["string", "null"]}, ["x", None], [1, []]),
    ({"type": "array"}, [[], [1, "a", [None]]], [{}, "[]"]),
    (OBJ, [{}, {"a": {"b": [1, 2]}}], [[], 1]),
    ({"type": "integer", "minimum": -15, "maximum": 312}, [-15, 0, 312, 99], [-16, 313, 1000]),
    ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}, [1, 9], [0, 10]),
    (
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "integer",
            "minimum": 0,
            "exclusiveMinimum": True,
        },
        [1],
        [0],
    ),
    ({"type": "number", "minimum": 0.5, "maximum": 2.25}, [0.5, 1, 2.25, 1.999], [0.49, 2.26, -1, 3]),
    ({"type": "number", "exclusiveMinimum": -1.5, "maximum": 0}, [-1.25, 0, -0.5], [-1.5, 0.01, -2]),
    ({"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 30}, [0, 5, 30], [3, 35, -5]),
    ({"type": "integer", "multipleOf": 25}, [0, 25, 100, 1275, -50], [10, 1270, 5]),
    ({"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "abc", "é\n", "😀😀"], ["a", "abcd", "😀"]),
    ({"type": "string", "pattern": "^[a-z]+[0-9]{2}$"}, ["ab12", "x00"], ["ab1", "AB12", "ab123"]),
    ({"type": "string", "pattern": "foo"}, ["foo", "xfooy"], ["fo", "bar"]),
    ({"type": "string", "pattern": "^\\d{3}-\\d{4}$"}, ["555-1234"], ["5555-1234", "55-1234"]),
    ({"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"}, ["a@b"], ["a@b@c", "a b@c", "@b"]),
    ({"type": "string", "pattern": "^[A-Z]*$", "maxLength": 3}, ["", "ABC"], ["ABCD", "a"]),
    ({"type": "string", "format": "date"}, ["2024-02-29", "2023-12-31"], ["2023-02-29", "2023-13-01", "x"]),
    (
        {"type": "string", "format": "date-time"},
        ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.5+01:00"],
        ["2024-01-02 03:04:05", "2024-01-02"],
    ),
    ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567"]),
    ({"type": "string", "format": "ipv4"}, ["192.168.0.1"], ["256.1.1.1", "1.2.3"]),
    ({"type": "string", "format": "email"}, ["john.doe@example.com"], ["john"]),
    ({"type": "string", "format": "hostname"}, ["example.com", "a-b"], ["-ab", "a..b"]),
    ({"type": "string", "format": "uri"}, ["https://example.com/a?b=1"], ["not a uri"]),
    ({"type": "string", "format": "some-unknown-format"}, ["anything"], [1]),
    (
        {"enum": ["a", 1, None, {"x": [1, True]}, [1, 2]]},
        ["a", 1, None, {"x": [1, True]}, [1, 2]],
        ["b", 2, {"x": [1]}, [2, 1]],
    ),
    ({"const": 'é"x'}, ['é"x'], ['e"x', ""]),
    ({"type": "string", "enum": ["a", 1, "bc"], "maxLength": 1}, ["a"], ["bc", 1]),
    (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
            "required": ["a"],
            "additionalProperties": False,
        },
        [{"a": 1}, {"a": 1, "b": "x"}],
        [{}, {"b": "x"}, {"a": 1, "c": 2}, {"a": "1"}],
    ),
    (
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        [{}, {"a": 1}, {"a": 1, "z": [1]}, {"z": 1}],
        [{"a": "x"}, {"a": 1, "a2": None, "b": {"q": "\x00"}} and 5],
    ),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, [{}, {"x": 1, "y": 2}], [{"x": "1"}]),
    (
        {
            "type": "object",
            "properties": {"p": {"type": "null"}},
            "additionalProperties": {"type": "integer"},
        },
        [{"p": None, "x": 1}],
        [{"p": None, "x": None}, {"p": 1}],
    ),
    (
        {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "required": ["b"]},
        [{"b": 1}, {"a": 1, "b": 2}, {"b": 1, "c": 2}, {"a": 1, "b": 2, "c": 3}],
        [{"a": 1}, {}],
    ),
    (
        {"type": "object", "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False},
        [{}, {"x-a": "1"}],
        [{"x-a": 1}, {"y": "1"}],
    ),
    (
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 2,
            "properties": {"a": {}, "b": {}, "c": {}},
            "additionalProperties": False,
        },
        [{"a": 1}, {"a": 1, "c": 2}],
        [{}, {"a": 1, "b": 1, "c": 1}],
    ),
    ({"type": "object", "propertyNames": {"enum": ["a", "b"]}}, [{}, {"a": 1}, {"a": 1, "b": 2}], [{"c": 1}]),
    (
        {
            "type": "object",
            "properties": {"a": {}, "b": {}},
            "dependentRequired": {"a": ["b"]},
            "required": ["b"],
        },
        [{"b": 1}, {"a": 1, "b": 1}],
        [{"a": 1}],
    ),
    (
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        [[1], [1, 2, 3]],
        [[], [1, 2, 3, 4], ["a"]],
    ),
    (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        [[], ["a"], ["a", 1]],
        [["a", 1, 2], [1]],
    ),
    (
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "array",
            "items": [{"type": "string"}],
            "additionalItems": {"type": "integer"},
        },
        [["a", 1, 2]],
        [["a", "b"]],
    ),
    (
        {"type": "array", "items": {"enum": ["x", "y", "z"]}, "uniqueItems": True},
        [[], ["x", "z"], ["x", "y", "z"]],
        [["x", "x"], ["w"]],
    ),
    ({"type": "array", "uniqueItems": False, "items": {"type": "boolean"}}, [[True, True]], [[1]]),
    ({"type": "array", "contains": {"type": "string"}}, [["a"], [1, "a", 2]], [[], [1, 2]]),
    (
        {"anyOf": [{"type": "string", "maxLength": 1}, {"type": "integer", "minimum": 5}]},
        ["", "a", 5],
        ["ab", 4],
    ),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1], [None, 1.5]),
    (
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"k": {"const": "a"}, "v": {"type": "integer"}},
                    "required": ["k"],
                },
                {
                    "type": "object",
                    "properties": {"k": {"const": "b"}, "v": {"type": "string"}},
                    "required": ["k"],
                },
            ]
        },
        [{"k": "a", "v": 1}, {"k": "b", "v": "x"}],
        [{"k": "a", "v": "x"}, {"k": "c"}],
    ),
    (
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]},
            ]
        },
        [{"a": 1, "b": "x"}],
        [{"a": 1}, {"b": "x"}, {"a": "1", "b": "x"}],
    ),
    ({"allOf": [{"type": "integer", "minimum": 0}, {"maximum": 5}]}, [0, 5], [-1, 6]),
    ({"not": {"type": "string"}}, [1, None, [], {}], ["a"]),
    ({"type": "string", "not": {"enum": ["a", "b"]}}, ["", "c", "ab"], ["a", "b"]),
    (
        {
            "$defs": {"pos": {"type": "integer", "minimum": 1}},
            "type": "array",
            "items": {"$ref": "#/$defs/pos"},
        },
        [[1, 2]],
        [[0]],
    ),
    (
        {
            "definitions": {"a/b": {"type": "string"}, "c%d": {"type": "integer"}},
            "properties": {"x": {"$ref": "#/definitions/a~1b"}, "y": {"$ref": "#/definitions/c%25d"}},
        },
        [{"x": "s", "y": 1}],
        [{"x": 1}, {"y": "s"}],
    ),
    (
        {
            "$id": "https://example.com/root.json",
            "$defs": {"a": {"$anchor": "thing", "type": "boolean"}},
            "items": {"$ref": "#thing"},
            "type": "array",
        },
        [[True]],
        [[1]],
    ),
    (
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "child": {"$ref": "#"}},
            "required": ["name"],
            "additionalProperties": False,
        },
        [{"name": "a"}, {"name": "a", "child": {"name": "b"}}],
        [{"name": "a", "child": {}}, {}],
    ),
    ({"if": {"type": "string"}}, ["a", 1], []),
    (True, [1, "a", None], []),
    # intersections: a pattern or format with length bounds, several patterns, a pattern minus some values
    ({"type": "string", "format": "email", "maxLength": 8}, ["a@b.cd"], ["abc@de.fgh", "nope"]),
    (
        {"type": "string", "pattern": "^[a-z]+\\d$", "minLength": 3, "maxLength": 4},
        ["ab1", "abc2"],
        ["a1", "abcd5", "abc"],
    ),
    ({"allOf": [{"type": "string", "pattern": "^a"}, {"pattern": "b$"}]}, ["ab", "axxb"], ["ba", "a", "b"]),
    ({"type": "string", "pattern": "^[a-c]+$", "not": {"enum": ["ab"]}}, ["a", "abc"], ["ab", "d", ""]),
    # complements (grammars/negation.py): overlapping oneOf, general not, if/then/else, dependentSchemas
    (
        {
            "type": "object",
            "oneOf": [
                {"properties": {"kind": {"enum": ["cb"]}, "value": {"type": "string"}}},
                {
                    "properties": {
                        "kind": {"enum": ["field", "v"]},
                        "value": {"type": ["string", "null", "number"]},
                    }
                },
            ],
        },
        [{"kind": "cb"}, {"kind": "field", "value": 3}, {"value": None}, {"kind": "cb", "value": "x"}],
        [{}, {"value": "x"}, {"kind": "cb", "value": 3}, {"kind": "other"}],
    ),
    (
        {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "integer", "maximum": 10}]},
        [-1, 11],
        [0, 5, 10, "a"],
    ),
    ({"oneOf": [{"enum": ["a", "b"]}, {"enum": ["b", "c"]}]}, ["a", "c"], ["b", "d"]),
    ({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1}, {"b": 1}], [{}, {"a": 1, "b": 2}]),
    ({"not": {"type": "string", "minLength": 3}}, ["ab", 1, None, []], ["abc", "abcd"]),
    (
        {"not": {"enum": [1, 2.5, "x", None, True]}},
        [0, 2, 3, -7, 2.25, "y", False, [], {}],
        [1, 2.5, "x", None, True],
    ),
    ({"type": "integer", "not": {"minimum": 3, "maximum": 5}}, [2, 6, -1], [3, 4, 5]),
    (
        {"not": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}},
        [{}, {"a": "x"}, 1, "s"],
        [{"a": 1}],
    ),
    (
        {
            "if": {"properties": {"a": {"const": 1}}, "required": ["a"]},
            "then": {"required": ["b"]},
            "else": {"required": ["c"]},
        },
        [{"a": 1, "b": 2}, {"a": 2, "c": 1}, {"a": 1.5, "c": 1}, {"c": 0}, 5],
        [{"a": 1}, {"a": 2, "b": 1}, {"a": 1, "c": 1}, {}],
    ),
    (
        {"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "integer"}},
        ["ab", 3],
        ["a", 2.5, None],
    ),
    ({"dependentSchemas": {"a": {"required": ["b"]}}}, [{"a": 1, "b": 2}, {"c": 1}, {}, 3], [{"a": 1}]),
    ({"not": {"not": {"type": "string", "minLength": 2}}}, ["ab", "abc"], ["a", 1, None]),
    # several patternProperties (one matching a declared name): a key takes the schemas of those it matches
    (
        {
            "type": "object",
            "patternProperties": {"^a": {"type": "integer"}, "b$": {"minimum": 3}},
            "properties": {"ab": {"maximum": 10}, "x": {"type": "string"}},
        },
        [{"ab": 5}, {"a1": 2}, {"zb": 4}, {"azb": 3}, {"x": "s"}],
        [{"ab": 2}, {"ab": 11}, {"ab": 5.5}, {"zb": 1}, {"azb": 2}, {"azb": 3.5}],
    ),
    (
        {
            "type": "object",
            "allOf": [
                {"patternProperties": {"^a": {"type": "integer"}}},
                {"patternProperties": {"b$": {"minimum": 3}}},
            ],
        },
        [{"ab": 5}, {"zb": 4.5}, {"a": 1}],
        [{"ab": 2}, {"a": 1.5}, {"zb": 1}],
    ),
    # a bound with more fractional digits than FRACTION_DIGITS is rounded inward (was a RecursionError)
    ({"exclusiveMinimum": 1e-300}, [1, 0.5, 0.25], [0, -1]),
    ({"type": "number", "maximum": -1e-300}, [-1, -0.5], [0, 1]),
    # dependentRequired whose dependencies are optional: (name absent) or (name present and them too)
    (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "card": {"type": "integer"},
                "addr": {"type": "string"},
            },
            "dependentRequired": {"card": ["addr"]},
        },
        [{"name": "x"}, {"card": 1, "addr": "a"}, {"addr": "a"}, {}],
        [{"card": 1}, {"name": "n", "card": 2}],
    ),
    # draft 4: a property named `id` whose schema `referencing` takes for an `id` (enum values still checked)
    (
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "kind": {
                        "oneOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "string", "enum": ["c"]}]
                    },
                },
            },
        },
        [[{"id": "x", "kind": "a"}, {"kind": "c"}]],
        [[{"kind": "d"}], [{"id": 1}]],
    ),
    # anchors per top-level alternative, also inside a group that is a whole alternative
    ({"type": "string", "pattern": "^a|b$"}, ["ab", "xb", "a", "b"], ["x", "ba"]),
    (
        {"type": "string", "pattern": "(^Hpt_|^Int_|_Armour_)"},
        ["Hpt_x", "Int_", "z_Armour_z"],
        ["xHpt_", "Armour"],
    ),
    ({"type": "string", "pattern": "^([0-9]{3})$|^(default)$"}, ["123", "default"], ["1234", "defaults", ""]),
    ({"type": "string", "pattern": "$|^x"}, ["", "abc"], [1]),
    # pattern complements: `(?&N&~M)`, taken in the token automaton
    ({"type": "string", "not": {"pattern": "^a"}}, ["", "b", "ba", "éa"], ["a", "ab", 1]),
    (
        {"oneOf": [{"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"}]},
        ["a", "xb"],
        ["ab", "c"],
    ),
    ({"not": {"not": {"type": "string", "pattern": "a"}}}, ["a", "ba"], ["b", 1]),
    ({"type": "string", "maxLength": 3, "not": {"pattern": "^[0-9]+$"}}, ["", "1a", "abc"], ["12", "abcd"]),
    (
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "dependencies": {"a": {"properties": {"b": {"type": "string"}}}},
        },
        [{"a": 1, "b": "x"}, {"b": 2}],
        [{"a": 1, "b": 2}],
    ),
]


def dumps(value: object, ascii_: bool) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_case(case: int) -> None:
    schema, good, bad = CASES[case]
    compiled = compile_json_schema(schema)
    assert isinstance(compiled, CompiledSchema)
    dfa = LazyDFA(compiled.grammar)
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(
        schema, format_checker=jsonschema.FormatChecker()
    )
    for value in good:
        assert validator.is_valid(value), value
        for ascii_ in (False, True):
            assert dfa.accepts(dumps(value, ascii_)), (schema, value, ascii_)
    unchecked = isinstance(schema, dict) and schema.get("format") not in (
        None,
        *validator.format_checker.checkers,
    )
    for value in bad:
        assert unchecked or not validator.is_valid(value), value
        for ascii_ in (False, True):
            assert not dfa.accepts(dumps(value, ascii_)), (schema, value, ascii_)


def test_whitespace_option() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array"}}}
    loose = LazyDFA(compile_json_schema(schema).grammar)
    assert loose.accepts('{ "a": [ 1, 2 ] }')
    compact = LazyDFA(compile_json_schema(schema, JsonSchemaOptions(whitespace="")).grammar)
    assert compact.accepts('{"a":[1,2]}') and not compact.accepts('{ "a":[1,2]}')


def test_printable_ascii_is_written_raw() -> None:
    """Printable ASCII (but `"`, `\\`, `/`) has one spelling, itself: a `\\u00XX` escape of it is never
    generated inside a string the schema constrains (a documented restriction), so an open object's other
    keys exclude the declared names by their raw letters alone; every other character keeps all its JSON
    forms, and a string the schema does not constrain takes any escape."""
    dfa = LazyDFA(compile_json_schema({"properties": {"ab": {"type": "integer"}}}).grammar)
    assert dfa.accepts('{"ab":1}') and not dfa.accepts('{"ab":"x"}')
    assert dfa.accepts('{"ac":"x"}') and dfa.accepts('{"a":"x"}') and dfa.accepts('{"abc":"x"}')
    assert not dfa.accepts('{"a\\u0062":"x"}')  # "ab" spelled with an escape: not generated
    for key in ("a\\u00e9", "a\\/", "a\\u002f", "a\\n", "a\\u0022", "\\ud83d\\ude00"):
        assert dfa.accepts('{"' + key + '":"x"}'), key
    short = LazyDFA(compile_json_schema({"type": "string", "maxLength": 3}).grammar)
    assert short.accepts('"\\u00e9\\u001f\\\\"') and not short.accepts('"\\u0041"')
    free = LazyDFA(compile_json_schema({"type": "string"}).grammar)  # unconstrained content: any escape
    assert free.accepts('"\\u0041"')


def test_explain_names_enforced_keywords() -> None:
    compiled = compile_json_schema(
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": 2}}}
    )
    entries = {e.pointer: e.enforced for e in compiled.explain}
    assert "maxLength" in entries["/properties/a"] and "properties" in entries[""]


REJECTED: list[tuple[dict, str, str]] = [
    ({"type": "string", "pattern": "(a)\\1"}, "pattern", ""),
    ({"properties": {"x": {"type": "string", "pattern": "^(?=a)"}}}, "pattern", "/properties/x"),
    ({"type": "string", "format": "duration"}, "format", ""),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems", ""),
    ({"type": "string", "format": "uri-template"}, "format", ""),
    ({"type": "string", "not": {"format": "email"}}, "format", "/not"),
    (
        {"oneOf": [{"type": "string", "format": "email"}, {"type": "string", "format": "uuid"}]},
        "format",
        "/oneOf/1",
    ),
    # the complement of a complement generated as a subset would be a superset: refused
    ({"not": {"not": {"type": "string", "format": "email"}}}, "format", "/not"),
    (
        {"oneOf": [{"type": "string", "maxLength": 3}, {"not": {"type": "string", "format": "email"}}]},
        "format",
        "/oneOf/1",
    ),
    ({"$ref": "https://example.com/missing.json"}, "$ref", ""),
    ({"$ref": "#/$defs/nope"}, "$ref", ""),
    ({"type": "integer", "multipleOf": 7}, "multipleOf", ""),
    ({"type": "number", "multipleOf": 0.01}, "multipleOf", ""),
    ({"unevaluatedProperties": False}, "unevaluatedProperties", ""),
    ({"type": "array", "items": {"type": "object"}, "minItems": 100000}, "minItems", ""),
    ({"type": "widget"}, "type", ""),
]


@pytest.mark.parametrize("case", range(len(REJECTED)))
def test_rejected(case: int) -> None:
    schema, keyword, pointer = REJECTED[case]
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema)
    assert (info.value.keyword, info.value.pointer) == (keyword, pointer), str(info.value)
    assert f"keyword '{keyword}'" in str(info.value)


def test_remote_ref() -> None:
    remote = {"$defs": {"n": {"type": "integer", "maximum": 3}}}
    options = JsonSchemaOptions(remotes={"https://example.com/r.json": remote})
    dfa = LazyDFA(compile_json_schema({"$ref": "https://example.com/r.json#/$defs/n"}, options).grammar)
    assert dfa.accepts("3") and not dfa.accepts("4")


def test_regexes_compile_in_rust() -> None:
    """outlines-core (Rust regex-automata) accepts every regex export with the same syntax."""
    from outlines_core import Index, Vocabulary

    vocab = {chr(i): [i] for i in range(32, 127)}
    vocab.update({"é": [200], "😀": [201]})
    vocabulary = Vocabulary(0, vocab)
    for schema, _, _ in CASES[:30]:
        grammar = compile_json_schema(schema).grammar
        if not grammar.recursive:
            Index(grammar.to_regex(), vocabulary)


def test_an_any_of_of_consts_against_many_branches_stays_linear() -> None:
    """Azure Pipelines' shape: a property that is an `anyOf` of N single-value enums, under N branches that
    each pin it with a pattern. The consts are one Flat (not N² merges) and each pattern is checked with
    Python's `re`, as jsonschema does; compiled well inside the 2 s budget, exact."""
    n = 200
    names = [f"Task{i}@{i % 3}" for i in range(n)]
    schema = {
        "type": "object",
        "properties": {
            "task": {"anyOf": [{"enum": [name], "description": "x", "ignoreCase": "value"} for name in names]}
        },
        "required": ["task"],
        "anyOf": [
            {"properties": {"task": {"pattern": f"^{name}$"}, "inputs": {"type": "object"}}} for name in names
        ],
    }
    start = time.perf_counter()
    dfa = LazyDFA(compile_json_schema(schema).grammar)
    assert time.perf_counter() - start < 2.0
    for text in (
        '{"task":"Task7@1"}',
        '{"task":"Task199@1","inputs":{}}',
        '{"task":"Task7@2"}',
        '{"task":"Nope"}',
    ):
        assert dfa.accepts(text) == jsonschema.Draft202012Validator(schema).is_valid(json.loads(text)), text


@pytest.mark.parametrize("value", ["abc", "xabcx", "ab", "", 3, None, ["abc"]])
def test_enum_values_checked_against_a_pattern_as_jsonschema_does(value) -> None:
    schema = {"enum": ["abc", "xabcx", "ab", "", 3, None, ["abc"]], "pattern": "abc", "unknown": 1}
    dfa = LazyDFA(compile_json_schema(schema).grammar)
    expected = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert dfa.accepts(json.dumps(value, separators=(",", ":"))) == expected


@pytest.mark.parametrize(
    "text",
    ['{"a":1}', '{"a":1,"bb":"x"}', '{"bb":null,"cc":[]}', '{"a":"x"}', '{"B":1}', '{"a":1,"a1":2}', "{}"],
)
def test_property_names_beside_declared_properties(text: str) -> None:
    """An additional name must satisfy `propertyNames` and be none of the declared ones (a declared name
    takes its own schema): the key set is an intersection with the "any name but these" trie."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "zz": {"type": "boolean"}},
        "propertyNames": {"pattern": "^[a-z]+$"},
    }
    dfa = LazyDFA(compile_json_schema(schema).grammar)
    assert dfa.accepts(text) == jsonschema.Draft202012Validator(schema).is_valid(json.loads(text)), text


def test_time_and_ipv6_formats_generate_only_valid_strings() -> None:
    """`time` is RFC 3339's full-time with its offset (no leap second), `ipv6` the full eight-group form:
    subsets every reading of the formats accepts; walked instances parse with the standard library."""
    import datetime
    import ipaddress

    from constrained.instances import InstanceGenerator

    times = InstanceGenerator({"type": "string", "format": "time"}).valid(40, seed=3)
    for instance in times:
        parsed = datetime.datetime.fromisoformat("1970-01-01T" + instance.value.replace("Z", "+00:00"))
        assert parsed.tzinfo is not None, instance.value
    for instance in InstanceGenerator({"type": "string", "format": "ipv6"}).valid(40, seed=3):
        ipaddress.IPv6Address(instance.value)
    dfa = LazyDFA(compile_json_schema({"type": "string", "format": "time"}).grammar)
    assert dfa.accepts('"23:59:59.5+05:30"') and dfa.accepts('"00:00:00Z"')
    assert not dfa.accepts('"12:00:00"') and not dfa.accepts('"24:00:00Z"') and not dfa.accepts('"12:00:60Z"')
