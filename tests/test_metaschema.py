"""Meta-schema validation (`grammars.check_schema`, jsonschema-rs): dialects, pointers, regexes, depth."""

from __future__ import annotations

import pytest

from grammars import InvalidSchemaError, check_schema
from grammars.metaschema import MAX_DEPTH, too_deep

DRAFT4 = "http://json-schema.org/draft-04/schema#"


def nested(levels: int) -> dict:
    """An object schema `levels` objects deep (two JSON containers per level)."""
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_valid_schemas_pass() -> None:
    check_schema({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}})
    check_schema(True)
    check_schema(nested(100))


def test_error_names_pointer() -> None:
    with pytest.raises(InvalidSchemaError) as info:
        check_schema({"properties": {"a/b": {"type": "nope"}}})
    assert info.value.pointer == "/properties/a~1b/type"


def test_dialect_from_dollar_schema() -> None:
    draft4_only = {"minimum": 1, "exclusiveMinimum": True}  # a boolean here is draft-04 syntax
    check_schema({"$schema": DRAFT4, **draft4_only})
    for schema in (draft4_only, {"$schema": "https://example.com/unknown", **draft4_only}):
        with pytest.raises(InvalidSchemaError) as info:  # default (and unknown): 2020-12
            check_schema(schema)
        assert info.value.pointer == "/exclusiveMinimum"


def test_regex_format() -> None:
    check_schema({"pattern": "^\\p{Letter}+$"})  # ECMA-262 (the suite's pattern.json); Python `re` refuses
    check_schema({"pattern": ".*\\{\\{.+}}.*"})  # a lone `}`: JavaScript without `u` and Python accept it
    with pytest.raises(InvalidSchemaError) as info:
        check_schema({"patternProperties": {"(": {}}})
    assert info.value.pointer == "/patternProperties"


@pytest.mark.parametrize("levels", [2_000, 200_000])
def test_deep_nesting_is_an_error_not_a_crash(levels: int) -> None:
    """Python's jsonschema raised RecursionError at 2,000 levels; the Rust validator alone would overflow its
    stack (a segfault) further down: the depth is checked first, iteratively."""
    with pytest.raises(InvalidSchemaError, match=f"limit of {MAX_DEPTH} levels") as info:
        check_schema(nested(levels))
    assert info.value.pointer.startswith("/properties/a/properties/a/")
    assert info.value.pointer.count("/properties/a") == MAX_DEPTH // 2


def test_too_deep_counts_containers() -> None:
    assert too_deep([[1]], 2) is None
    assert too_deep([[1], {"k": [[]]}], 2) == ["1", "k"]
    assert too_deep([[[[]]] * 100_000], 3) == ["0", "0", "0"]  # the first in document order
