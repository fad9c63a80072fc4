"""Schema test-data generation: valid instances validate, near misses fail with the stated keyword."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from constrained.instances import InstanceGenerator, add_arguments, make_validator, run_instances
from grammars import SchemaError

MASKBENCH = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "maskbench"

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "color": {"enum": ["red", "green", "blue"]},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "enum": {"enum": ["red", "green", "blue"]},
    "const": {"const": {"a": 1}},
    "integer_range": {"type": "integer", "minimum": -5, "exclusiveMaximum": 50},
    "number_multiple": {"type": "integer", "multipleOf": 3, "minimum": 0, "maximum": 99},
    "string_lengths": {"type": "string", "minLength": 2, "maxLength": 6},
    "pattern": {"type": "string", "pattern": "^[a-z]{2}-[0-9]{3}$"},
    "format_date": {"type": "string", "format": "date"},
    "array_bounds": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
    "unique_enum": {"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True},
    "any_of": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 10}]},
    "one_of": {"oneOf": [{"type": "null"}, {"type": "boolean"}]},
    "nullable_union": {"type": ["string", "null"], "maxLength": 4},
    "nested": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "tag": {"type": "string"}},
                    "required": ["id"],
                },
                "maxItems": 4,
            }
        },
        "required": ["items"],
    },
    "refs": {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
        "required": ["a"],
    },
    "draft7": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "exclusiveMinimum": 0}, "s": {"type": "string"}},
        "required": ["n"],
        "additionalProperties": False,
    },
    "min_properties": {"type": "object", "minProperties": 1, "maxProperties": 2},
    "boolean_true": True,
}


def _check(schema, n: int = 40, seed: int = 0) -> tuple[list, list]:
    gen = InstanceGenerator(schema)
    valid = gen.valid(n, seed=seed)
    validator = make_validator(schema)
    assert len(valid) == n
    for inst in valid:
        assert inst.valid and validator.is_valid(inst.value), inst.text
        assert json.loads(inst.text) == inst.value
        assert gen.accepts(inst.raw)
    invalid = gen.invalid(n, seed=seed, valid=valid)
    for miss in invalid:
        errors = list(validator.iter_errors(miss.value))
        assert errors, miss
        assert {e.validator for e in errors} == {miss.violates}, (miss, [e.message for e in errors])
        assert not gen.accepts(miss.text), miss
    return valid, invalid


# Compiler soundness bug found by this generator: `uniqueItems` over a finite item domain is dropped
# (the regex accepts `[1,1]`); see grammars/json_schema.py `_unique`.
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_valid_and_invalid(name):
    valid, invalid = _check(SCHEMAS[name])
    if name != "boolean_true":
        assert invalid, f"no near miss for {name}"


def test_invalid_keywords_exercised():
    _, invalid = _check(SCHEMAS["object"], n=60)
    kinds = {m.violates for m in invalid}
    assert {"required", "additionalProperties", "maxLength", "enum", "minimum", "maximum", "type"} <= kinds
    pointers = {(m.violates, m.pointer) for m in invalid}
    assert ("maxLength", "/properties/name") in pointers
    _, invalid = _check(SCHEMAS["array_bounds"])
    assert {"minItems", "maxItems"} <= {m.violates for m in invalid}
    _, invalid = _check(SCHEMAS["number_multiple"])
    assert "multipleOf" in {m.violates for m in invalid}
    _, invalid = _check(SCHEMAS["integer_range"])
    assert {"minimum", "exclusiveMaximum"} <= {m.violates for m in invalid}


def test_seeded_determinism():
    gen = InstanceGenerator(SCHEMAS["nested"])
    a = [i.text for i in gen.valid(20, seed=7)]
    b = [i.text for i in InstanceGenerator(SCHEMAS["nested"]).valid(20, seed=7)]
    c = [i.text for i in gen.valid(20, seed=8)]
    assert a == b
    assert a != c
    assert [m.text for m in gen.invalid(10, seed=3)] == [m.text for m in gen.invalid(10, seed=3)]


def test_diversity_and_coverage():
    gen = InstanceGenerator(SCHEMAS["enum"])
    assert {i.value for i in gen.valid(50, seed=1)} == {"red", "green", "blue"}
    gen = InstanceGenerator(SCHEMAS["object"])
    valid = gen.valid(50, seed=1)
    assert len({i.value.get("color") for i in valid} - {None}) >= 2
    assert any("color" in i.value for i in valid) and any("color" not in i.value for i in valid)
    assert len({i.value["age"] for i in valid}) >= 5
    assert len({len(i.value["name"]) for i in valid}) >= 3
    cov = gen.coverage(valid)
    assert cov.optional["/properties/color"][0] > 0 and cov.optional["/properties/color"][1] > 0
    assert len(cov.enum_values["/properties/color"]) >= 2
    assert cov.pointers["/properties/age"] == 50
    summary = cov.summary()
    assert summary["instances"] == 50 and summary["optional_both"] == 1
    gen = InstanceGenerator(SCHEMAS["any_of"])
    cov = gen.coverage(gen.valid(40, seed=2))
    assert cov.branches["/anyOf"] == {0, 1}
    assert cov.pointers["/anyOf/0"] and cov.pointers["/anyOf/1"]
    gen = InstanceGenerator(SCHEMAS["array_bounds"])
    assert {len(i.value) for i in gen.valid(50, seed=3)} == {1, 2, 3}
    gen = InstanceGenerator(SCHEMAS["refs"])
    cov = gen.coverage(gen.valid(30, seed=4))
    assert cov.pointers["/$defs/point"] > 0


def test_cli_runner(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMAS["object"]))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    assert (
        run_instances(parser.parse_args([str(path), "-n", "5", "--seed", "2", "--coverage"]), out, err) == 0
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    validator = make_validator(SCHEMAS["object"])
    assert all(validator.is_valid(json.loads(line)) for line in lines)
    assert json.loads(err.getvalue())["instances"] == 5
    out = io.StringIO()
    assert run_instances(parser.parse_args([str(path), "-n", "5", "--invalid"]), out, err) == 0
    for line in out.getvalue().splitlines():
        record = json.loads(line)
        assert set(record) == {"instance", "violates", "pointer", "path"}
        errors = list(validator.iter_errors(record["instance"]))
        assert errors and all(e.validator == record["violates"] for e in errors)


def test_unsupported_schema_raises():
    with pytest.raises(SchemaError):
        InstanceGenerator({"type": "string", "format": "duration"})


@pytest.mark.skipif(not MASKBENCH.is_dir(), reason="maskbench corpus not present")
def test_maskbench_first_schemas():
    checked = 0
    for path in sorted(MASKBENCH.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in list(handle)[:2]:
                schema = json.loads(line)["schema"]
                try:
                    InstanceGenerator(schema)
                except Exception:
                    continue
                _check(schema, n=20)
                checked += 1
    assert checked >= 5
