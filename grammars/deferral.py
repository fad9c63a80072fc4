"""Which sub-schemas the JSON-Schema walk may leave for later: a cheap check over the schema graph.

Contract: `Deferral(registry).ready(node)` is True only when walking `node` on its own (the value of one
property) can neither fail nor come out empty, whenever it runs:
- every schema reachable from it (through `properties`, `additionalProperties`, `items`, `anyOf`, `oneOf`
  and `$ref`) uses only keywords whose compilation never refuses: annotations and unknown keywords, `type`,
  `enum`/`const` (beside `type` only), string lengths and formats (not a known-unsupported one; a known one
  without lengths), a `pattern` alone (no lengths, no format) that parses, numeric bounds (an instance
  between them checked), `properties`/`required`/`additionalProperties`, one `items`
  schema with item counts, `anyOf`, `oneOf` whose branches declare pairwise disjoint types, and `$ref` with
  nothing but annotations beside it;
- no reachable `$ref` cycle (recursion stays with the eager walk, which marks it recursive);
- some instance is valid (through required properties and minimum item counts).
Everything else answers False, and the walk compiles such a node at once, as before. Answers are memoized
per schema object (a schema object sits at one place of one document: one base URI).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import SchemaError
from .flat import ALL_TYPES, json_type
from .ir import NOTHING
from .refs import Node, Registry, escape_token
from .strings import FORMATS, KNOWN_UNSUPPORTED, anchored_pattern, pattern_regex

# The keywords a deferred sub-schema may use (others the walk enforces may refuse or conflict).
_SAFE = frozenset(
    {
        "type",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "anyOf",
        "oneOf",
        "$ref",
    }
)
_MAX_BRANCHES = 16
_MAX_ENUM = 256
_MAX_MIN_ITEMS = 64
_NO = (False, False)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _types(schema: dict) -> frozenset[str] | None:
    """The types `schema` allows (`number` includes `integer`), None when `type` is malformed."""
    if "type" not in schema:
        return ALL_TYPES
    t = schema["type"]
    names = [t] if isinstance(t, str) else t
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(x, str) and x in ALL_TYPES for x in names)
    ):
        return None
    types = set(names)
    if "number" in types:
        types.add("integer")
    return frozenset(types)


class Deferral:
    """The check of the module docstring over one schema document set (`registry`)."""

    def __init__(self, registry: Registry, handled: frozenset[str]) -> None:
        self._registry = registry
        self._handled = handled  # keywords the walk enforces (the rest are annotations to it)
        self._known: dict[int, tuple[bool, bool]] = {}  # id(schema) -> (safe, admits an instance)
        self._visiting: set[int] = set()

    def ready(self, node: Node) -> bool:
        safe, inhabited = self._check(node)
        return safe and inhabited

    def _check(self, node: Node) -> tuple[bool, bool]:
        s = node.schema
        if isinstance(s, bool):
            return True, s
        if not isinstance(s, dict):
            return _NO
        key = id(s)
        known = self._known.get(key)
        if known is not None:
            return known
        if key in self._visiting:  # a cycle
            return _NO
        self._visiting.add(key)
        try:
            result = self._schema(node)
        except SchemaError:  # an unresolvable reference ...: the eager walk reports it
            result = _NO
        finally:
            self._visiting.discard(key)
        self._known[key] = result
        return result

    def _schema(self, node: Node) -> tuple[bool, bool]:
        s: dict = node.schema
        keys = {k for k in s if k in self._handled}
        if keys - _SAFE:
            return _NO
        if not keys:
            return True, True
        base = self._registry.base_of(node)

        def child(value: Any, *path: str | int) -> Node:
            return Node(value, "/".join([node.pointer, *(escape_token(str(p)) for p in path)]), base)

        if "$ref" in keys:
            if keys != {"$ref"}:
                return _NO
            return self._check(self._registry.resolve(s["$ref"], base, node.pointer))
        if keys & {"anyOf", "oneOf"}:
            return self._branches(s, keys, child)
        types = _types(s)
        if types is None:
            return _NO
        if "enum" in keys or "const" in keys:
            return self._values(s, keys, types)
        string = self._string(s, node.pointer)
        number = self._numbers(s, types)
        if string is None or number is None:
            return _NO
        array = self._array(s, child)
        obj = self._object(s, child)
        if array is None or obj is None:
            return _NO
        inhabited = (
            bool(types & {"null", "boolean"})
            or number
            or ("string" in types and string)
            or ("array" in types and array)
            or ("object" in types and obj)
        )
        return True, inhabited

    def _branches(self, s: dict, keys: set[str], child) -> tuple[bool, bool]:
        if len(keys) != 1:
            return _NO
        (kw,) = keys
        branches = s[kw]
        if not isinstance(branches, list) or not 0 < len(branches) <= _MAX_BRANCHES:
            return _NO
        results = [self._check(child(b, kw, i)) for i, b in enumerate(branches)]
        if not all(safe for safe, _ in results):
            return _NO
        if kw == "oneOf":
            return self._one_of(branches, results)
        return True, any(inhabited for _, inhabited in results)

    def _one_of(self, branches: list, results: list[tuple[bool, bool]]) -> tuple[bool, bool]:
        """Exactly one branch. Safe where no two branches can match the same value (types pairwise
        disjoint), or where every branch is only a `type` (its complement is a type: never refused, except
        `integer` within `number`); inhabited by a branch value that no other branch matches."""
        types = [_types(b) if isinstance(b, dict) and "type" in b else None for b in branches]
        if any(t is None for t in types):
            return _NO
        if all(set(b) & self._handled == {"type"} for b in branches):
            if any("number" in t for t in types) and any("integer" in t and "number" not in t for t in types):
                return _NO
            return True, any(sum(name in t for t in types) == 1 for name in ALL_TYPES)
        seen: set[str] = set()
        for t in types:
            if t & seen:
                return _NO
            seen |= t
        return True, any(inhabited for _, inhabited in results)

    @staticmethod
    def _values(s: dict, keys: set[str], types: frozenset[str]) -> tuple[bool, bool]:
        if keys - {"enum", "const", "type"} or {"enum", "const"} <= keys:
            return _NO
        values = [s["const"]] if "const" in s else s["enum"]
        if not isinstance(values, list) or not 0 < len(values) <= _MAX_ENUM:
            return _NO
        return True, any(json_type(v) in types for v in values)

    @staticmethod
    def _string(s: dict, pointer: str) -> bool | None:
        """Whether some string fits (None: a length, format or pattern that may refuse or conflict)."""
        low, high = s.get("minLength", 0), s.get("maxLength")
        if _count(low) is None or high is not None and _count(high) is None:
            return None
        bounded = "minLength" in s or "maxLength" in s
        if "format" in s:
            fmt = s["format"]
            if not isinstance(fmt, str) or fmt in KNOWN_UNSUPPORTED or fmt in FORMATS and bounded:
                return None
        if "pattern" in s:  # alone, a pattern is its own regex: empty only through an empty class
            pattern, where = s["pattern"], pointer + "/pattern"
            if not isinstance(pattern, str) or bounded or "format" in s:
                return None
            try:
                anchored = anchored_pattern(pattern, where)
                regex = anchored[0] if anchored is not None else pattern_regex(pattern, where)
            except SchemaError:
                return None
            if NOTHING in regex:
                return None
        return high is None or low <= high

    @staticmethod
    def _numbers(s: dict, types: frozenset[str]) -> bool | None:
        """Whether some number of `types` fits the bounds (None: a bound the walk may refuse)."""
        bounds = [k for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in s]
        if not all(_number(s[k]) for k in bounds):
            return None  # draft 4's boolean exclusives included: left to the eager walk
        if not types & {"integer", "number"}:
            return False
        lows = [(s[k], k == "exclusiveMinimum") for k in ("minimum", "exclusiveMinimum") if k in s]
        highs = [(s[k], k == "exclusiveMaximum") for k in ("maximum", "exclusiveMaximum") if k in s]
        if not lows or not highs:
            return True
        low, low_open = max(lows, key=lambda b: (b[0], b[1]))
        high, high_open = min(highs, key=lambda b: (b[0], not b[1]))
        if "number" in types:
            return low < high or low == high and not (low_open or high_open)
        first = math.floor(low) + 1 if low_open else math.ceil(low)  # the least integer in range
        last = math.ceil(high) - 1 if high_open else math.floor(high)  # the greatest
        return first <= last

    def _array(self, s: dict, child) -> bool | None:
        """Whether some array fits (None: unsafe)."""
        low, high = s.get("minItems", 0), s.get("maxItems")
        if (
            _count(low) is None
            or low > _MAX_MIN_ITEMS
            or high is not None
            and (_count(high) is None or high < low)
        ):
            return None
        if s.get("uniqueItems", False) is not False:
            return None
        item_ok = True
        if "items" in s:
            if not isinstance(s["items"], dict | bool):
                return None
            safe, item_ok = self._check(child(s["items"], "items"))
            if not safe:
                return None
        return low == 0 or item_ok

    def _object(self, s: dict, child) -> bool | None:
        """Whether some object fits (None: unsafe)."""
        props = s.get("properties", {})
        required = s.get("required", [])
        extra = s.get("additionalProperties", True)
        if (
            not isinstance(props, dict)
            or not isinstance(required, list)
            or not isinstance(extra, dict | bool)
        ):
            return None
        if not all(isinstance(r, str) for r in required):
            return None
        inhabited = {}
        for name, sub in props.items():
            safe, inhabited[name] = self._check(child(sub, "properties", name))
            if not safe:
                return None
        safe, extra_ok = self._check(child(extra, "additionalProperties"))
        if not safe:
            return None
        return all(inhabited[r] if r in props else extra_ok for r in required)
