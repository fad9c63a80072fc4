"""The complement of a `Flat`, as a disjunction of Flats: every way an instance can fail its keywords.

Used for ``not``, for ``oneOf`` (each branch minus the branches it overlaps), ``if``/``then``/``else`` and
``dependentSchemas``. An instance violates a conjunction when it violates one conjunct, so the complement
is a union of one alternative per keyword (a type the Flat does not allow; a number below ``minimum``; a
string shorter than ``minLength``; an object without a ``required`` member, or with a member whose value
fails that member's schema; an array with too few items; ...). Contract:

- every alternative returned is disjoint from the Flat (soundness: a compiled complement never admits an
  instance of the negated schema);
- a ``pattern`` violation is a string matching none of it (``not_patterns``: a complement operand of the
  string's intersection, ``(?&N&~M)``, taken in the token automaton);
- keywords whose violation has no Flat form (``format``, ``multipleOf``, ``items``,
  ``additionalProperties``, ...) contribute no alternative and are reported in ``Complement.dropped``: the
  complement is then a subset of the true one (outputs avoid instances that would need them), which the
  compiler records and, where the subset is empty, reports as the keyword it could not negate.

A member's value is negated lazily, through a `Negated` node compiled like any other (so a recursive
schema's complement recurses through the same rule memo); the compiler keeps one `Negated` per node so its
memo recognises it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .flat import ALL_TYPES, Flat, json_type
from .numbers import Bound
from .refs import Node

NUMERIC = frozenset({"integer", "number"})
MAX_NUMBER_GAPS = 64  # numbers other than an enum's: one interval per gap, up to this many values


@dataclass(frozen=True)
class Negated(Node):
    """The instances that fail `of` (its ``schema`` is ``{"not": of.schema}``, its place `of`'s). The
    compiler flattens it as the complement of `of`, and checks enum values against it by inverting `of`'s
    verdict."""

    of: Node | None = None


def negated(of: Node) -> Negated:
    return Negated({"not": of.schema}, of.pointer, of.base, of)


@dataclass
class Complement:
    """Alternatives (Flats) whose union is contained in the complement, the sub-schemas whose instances
    violate it outright (a ``not`` inside the Flat: satisfying its operand violates the Flat), and the
    (keyword, pointer) pairs whose violations are not generated."""

    alternatives: list[Flat] = field(default_factory=list)
    satisfying: list[Node] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)


def complement(
    f: Flat, node: Negated, enum_values: Callable[[Flat], list[Any]], value_not: Callable[[Node], Negated]
) -> Complement:
    """The violations of `f`, a disjunct of `node.of`: each alternative has `node` as its source (so enum
    values merged into it are checked against the whole complement). `enum_values(f)` lists the enum values
    valid under `f`; `value_not(n)` is the memoized `negated(n)`."""
    out = Complement(satisfying=list(f.nots))
    ptr = node.pointer

    def add(**keywords: Any) -> None:
        out.alternatives.append(Flat([node], **keywords))

    def drop(keyword: str) -> None:
        out.dropped.append((keyword, ptr))

    types = f.types
    others = ALL_TYPES - types
    if "integer" in types and "number" not in types:
        others -= {"number"}  # a non-integral number has no Flat form: not generated
        drop("type")
    if others:
        add(types=frozenset(others))
    if f.enum is not None:
        _enum_violations(enum_values(f), types, node, add, drop)
        return out
    numeric = types & NUMERIC
    if numeric:
        if f.lower is not None:
            add(types=numeric, upper=Bound(f.lower.value, not f.lower.exclusive))
        if f.upper is not None:
            add(types=numeric, lower=Bound(f.upper.value, not f.upper.exclusive))
        if f.multiple:
            drop("multipleOf")
    if "string" in types:
        string = frozenset({"string"})
        _count_violations(add, string, (f.min_len, f.max_len), ("min_len", "max_len"))
        for pattern in f.patterns:  # a string the pattern does not match (complemented in the automaton)
            add(types=string, not_patterns=[pattern])
        for pattern in f.not_patterns:  # a string one of them matches
            add(types=string, patterns=[pattern])
        if f.formats:
            drop("format")
    if "object" in types:
        _object_violations(f, node, add, drop, value_not)
    if "array" in types:
        _count_violations(add, frozenset({"array"}), (f.min_items, f.max_items), ("min_items", "max_items"))
        for keyword, present in (
            ("items", f.items is not None or bool(f.prefix)),
            ("uniqueItems", f.unique is not None),
            ("contains", bool(f.contains)),
        ):
            if present:
                drop(keyword)
    return out


def _count_violations(
    add, types: frozenset[str], bounds: tuple[int, int | None], keys: tuple[str, str]
) -> None:
    """Fewer than the minimum or more than the maximum of a length or item count (`keys`: its Flat fields)."""
    (low, high), (low_key, high_key) = bounds, keys
    if low > 0:
        add(types=types, **{high_key: low - 1})
    if high is not None:
        add(types=types, **{low_key: high + 1})


def _enum_violations(values: list[Any], types: frozenset[str], node: Node, add, drop) -> None:
    """Values of an allowed type outside the enum (the enum already implies every other keyword)."""
    ptr, base = node.pointer, node.base
    by_type: dict[str, list[Any]] = {}
    for v in values:
        t = json_type(v)
        by_type.setdefault("number" if t == "integer" else t, []).append(v)
    if "string" in types:
        strings = by_type.get("string", [])
        add(types=frozenset({"string"}), nots=[Node({"enum": strings}, ptr, base)] if strings else [])
    if "boolean" in types:
        rest = [b for b in (False, True) if not any(v is b for v in by_type.get("boolean", []))]
        if rest:
            add(enum=rest)
    if "null" in types and "null" not in by_type:
        add(types=frozenset({"null"}))
    numeric = types & NUMERIC
    numbers = sorted(
        {Decimal(repr(v)) if isinstance(v, float) else Decimal(v) for v in by_type.get("number", [])}
    )
    if numeric and len(numbers) <= MAX_NUMBER_GAPS:  # the open intervals around the values
        for lo, hi in zip([None, *numbers], [*numbers, None], strict=True):
            add(
                types=numeric,
                lower=None if lo is None else Bound(lo, True),
                upper=None if hi is None else Bound(hi, True),
            )
    elif numeric:
        drop("enum")
    for t in ("array", "object"):
        if t in types:
            if t in by_type:
                drop("enum")  # "a container other than these": no Flat form
            else:
                add(types=frozenset({t}))


def _object_violations(f: Flat, node: Node, add, drop, value_not) -> None:
    obj = frozenset({"object"})
    for name in f.required:
        add(types=obj, props={name: [Node(False, node.pointer, node.base)]})
    for name, nodes in f.props.items():
        for n in nodes:
            if n.schema is True or n.schema == {}:
                continue
            add(types=obj, required=[name], props={name: [value_not(n)]})
    for keyword, present in (
        ("additionalProperties", f.additional is not None),
        ("patternProperties", bool(f.pattern_props)),
        ("minProperties", f.min_props > 0),
        ("maxProperties", f.max_props is not None),
        ("propertyNames", bool(f.prop_names)),
    ):
        if present:
            drop(keyword)
