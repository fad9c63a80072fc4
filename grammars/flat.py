"""`Flat`: the conjunction of the local keywords of one or more schema nodes, the unit the JSON-Schema
compiler merges (``allOf``), unions (``anyOf``) and negates (`grammars.negation`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .numbers import Bound
from .refs import Node

ALL_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


@dataclass
class Flat:
    """Conjunction of local keywords of one or more schema nodes."""

    sources: list[Node]
    types: frozenset[str] = ALL_TYPES
    enum: list[Any] | None = None
    lower: Bound | None = None
    upper: Bound | None = None
    multiple: list[tuple[Decimal, str]] = field(default_factory=list)
    min_len: int = 0
    max_len: int | None = None
    patterns: list[tuple[str, str]] = field(default_factory=list)
    not_patterns: list[tuple[str, str]] = field(default_factory=list)  # strings must match none of these
    formats: list[tuple[str, str]] = field(default_factory=list)
    props: dict[str, list[Node]] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    additional: list[Node] | None = None
    pattern_props: list[tuple[str, str, Node]] = field(default_factory=list)
    min_props: int = 0
    max_props: int | None = None
    prop_names: list[Node] = field(default_factory=list)
    prefix: list[list[Node]] = field(default_factory=list)
    items: list[Node] | None = None
    min_items: int = 0
    max_items: int | None = None
    unique: str | None = None
    contains: list[tuple[Node, int, int | None]] = field(default_factory=list)
    nots: list[Node] = field(default_factory=list)
    # (keyword, pointer) when this Flat belongs to a complement generated without that keyword's violations:
    # the union it is part of is a subset of what it stands for, so it must not be complemented again.
    subset_of: tuple[str, str] | None = None


def json_type(value: Any) -> str:
    """The JSON-Schema type of a JSON value (an integral float is an integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or isinstance(value, float) and value.is_integer():
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_key(value: Any) -> str:
    """Key for JSON equality (1 == 1.0, key order irrelevant)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{json_key(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_key(v) for v in value) + "]"
    return json.dumps(value)
