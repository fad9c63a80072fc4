"""Near misses: valid instances mutated so that exactly one schema keyword fails.

Contract:
- `check_near_miss(validator, value)` is the verdict: (keyword, schema pointer, instance pointer) when
  `jsonschema` reports errors of exactly ONE keyword at one schema location, else None. The keyword is
  the one `jsonschema` names, so a mutation inside an `anyOf` branch is reported as violating that `anyOf`.
- `near_misses(base, n, rng, sites=, validator=)` derives up to `n` distinct `NearMiss`es from the valid
  instances `base`. Mutations are targeted at each `Site` (drop a required member, one past
  max/minLength/Items/Properties, just outside minimum/maximum/exclusive*, off multipleOf, value not in
  enum/const, extra member where additionalProperties is false, a duplicate item, a string breaking
  pattern/format, ...) and generic at every instance location (type swaps, emptied/grown strings and
  arrays). Candidates are pooled by keyword and drawn round-robin (seeded), within a budget of
  `40 * n + 200` tries; a candidate that does not fit, repeats, has no error or errors of several keywords
  is discarded.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable
from typing import Any

from jsonschema.protocols import Validator

from constrained.instances.common import Instance, NearMiss, all_finite, compact_json, json_pointer
from constrained.instances.coverage import SchemaSites, Site
from grammars.flat import json_key  # the compiler's JSON-equality key (1 == 1.0, key order ignored)

_FAIL = object()
_TYPE_SAMPLES = {
    "null": None,
    "boolean": True,
    "integer": 7,
    "number": 0.5,
    "string": "x",
    "array": [],
    "object": {},
}
_FORMAT_BREAKERS = ("", "not a valid value", "2024-13-45", "::::", "@", "x" * 300)


def check_near_miss(validator: Validator, value: Any) -> tuple[str, str, str] | None:
    """(keyword, schema pointer, instance pointer) when jsonschema reports errors of exactly one keyword
    at exactly one schema location; else None."""
    try:
        errors = list(validator.iter_errors(value))
    except Exception:
        return None
    if not errors:
        return None
    kinds = {(e.validator, tuple(e.absolute_schema_path)) for e in errors}
    if len(kinds) != 1:
        return None
    err = errors[0]
    schema_ptr = json_pointer(list(err.absolute_schema_path)[:-1])
    return str(err.validator), schema_ptr, json_pointer(err.absolute_path)


def near_misses(
    base: list[Instance], n: int, rng: random.Random, *, sites: SchemaSites, validator: Validator
) -> list[NearMiss]:
    """Up to `n` near misses mutated from the valid instances `base`."""
    by_kind: dict[str, list[tuple[Any, tuple, tuple]]] = {}
    for inst in base:
        for site in sites.sites(inst.value):
            for label, op in _targeted(site):
                by_kind.setdefault(label.split("+")[0].split("-")[0], []).append((inst.value, site.path, op))
        for path, item in _locations(inst.value):
            for _label, op in _generic(item):
                by_kind.setdefault("generic", []).append((inst.value, path, op))
    pools = {k: v for k, v in sorted(by_kind.items())}
    for pool in pools.values():
        rng.shuffle(pool)
    out: list[NearMiss] = []
    seen: set[str] = set()
    budget = 40 * max(n, 1) + 200
    while len(out) < n and pools and budget > 0:
        for kind in list(pools):
            if len(out) >= n or budget <= 0:
                break
            pool = pools[kind]
            if not pool:
                del pools[kind]
                continue
            budget -= 1
            value, path, op = pool.pop()
            mutated = _apply(value, path, op)
            if mutated is _FAIL or not all_finite(mutated):
                continue
            text = compact_json(mutated)
            if text in seen:
                continue
            verdict = check_near_miss(validator, mutated)
            if verdict is None:
                continue
            seen.add(text)
            out.append(NearMiss(mutated, text, *verdict, mutation=kind))
    return out


def _locations(value: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _locations(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _locations(v, (*path, i))


def _apply(root: Any, path: tuple, op: tuple) -> Any:
    """A deep copy of `root` with `op` applied at `path`: ("set", v), ("set_item", i, v), ("del", key or
    index), ("add", key, v) (on a list: append v); `_FAIL` when the op does not fit."""
    if op[0] == "set_item":
        path, op = (*path, op[1]), ("set", op[2])
    if op[0] == "set" and not path:
        return copy.deepcopy(op[1])
    root = copy.deepcopy(root)
    steps = path[:-1] if op[0] == "set" else path
    node = root
    try:
        for step in steps:
            node = node[step]
    except (KeyError, IndexError, TypeError):
        return _FAIL
    kind = op[0]
    if kind == "set":
        node[path[-1]] = copy.deepcopy(op[1])
        return root
    if kind == "del":
        if isinstance(node, dict) and op[1] in node:
            del node[op[1]]
            return root
        if isinstance(node, list) and isinstance(op[1], int) and 0 <= op[1] < len(node):
            del node[op[1]]
            return root
        return _FAIL
    if kind == "add":
        if isinstance(node, dict) and op[1] is not None and op[1] not in node:
            node[op[1]] = copy.deepcopy(op[2])
            return root
        if isinstance(node, list):
            node.append(copy.deepcopy(op[2]))
            return root
    return _FAIL


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _targeted(site: Site) -> Iterable[tuple[str, tuple]]:
    """(keyword, op) candidates breaking one keyword of `site.schema` at `site.value`."""
    node, value = site.schema, site.value
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        for t, sample in _TYPE_SAMPLES.items():
            if t not in types and not (t == "integer" and "number" in types):
                yield "type", ("set", sample)
    if isinstance(node.get("enum"), list):
        for cand in _not_in(node["enum"], value):
            yield "enum", ("set", cand)
    if "const" in node:
        for cand in _not_in([node["const"]], value):
            yield "const", ("set", cand)
    if isinstance(value, str):
        if _num(node.get("maxLength")):
            pad = (value[-1:] or "a") * (int(node["maxLength"]) + 1 - len(value))
            yield "maxLength", ("set", value + pad)
        if _num(node.get("minLength")) and node["minLength"] > 0:
            yield "minLength", ("set", value[: int(node["minLength"]) - 1])
        if isinstance(node.get("pattern"), str):
            for cand in ("", "!", value + "\u00a7!", "a" * 5, "0", value[:1]):
                yield "pattern", ("set", cand)
        if isinstance(node.get("format"), str):
            for cand in _FORMAT_BREAKERS:
                yield "format", ("set", cand)
    if _num(value):
        integer = isinstance(value, int)
        step = 1 if integer else 0.5
        for kw in ("minimum", "exclusiveMinimum"):
            bound = node.get(kw)
            if _num(bound):
                yield kw, ("set", bound if kw == "exclusiveMinimum" else _below(bound, integer, step))
                yield kw, ("set", _below(bound, integer, step))
        for kw in ("maximum", "exclusiveMaximum"):
            bound = node.get(kw)
            if _num(bound):
                yield kw, ("set", bound if kw == "exclusiveMaximum" else _above(bound, integer, step))
                yield kw, ("set", _above(bound, integer, step))
        if node.get("exclusiveMinimum") is True and _num(node.get("minimum")):  # draft 4
            yield "minimum", ("set", node["minimum"])
        if node.get("exclusiveMaximum") is True and _num(node.get("maximum")):
            yield "maximum", ("set", node["maximum"])
        m = node.get("multipleOf")
        if _num(m) and m > 0:
            if isinstance(m, int) and m >= 2:
                yield "multipleOf", ("set", value + 1)
                yield "multipleOf", ("set", value - 1)
            yield "multipleOf", ("set", value + m / 2)
            yield "multipleOf", ("set", value + m / 3)
    if isinstance(value, dict):
        required = node.get("required")
        if isinstance(required, list):
            for name in required:
                if name in value:
                    yield "required", ("del", name)
        extra = _fresh_key(value, node)
        if node.get("additionalProperties") is False:
            for sample in (None, 0, "x"):
                yield "additionalProperties", ("add", extra, sample)
        if node.get("unevaluatedProperties") is False:
            yield "unevaluatedProperties", ("add", extra, None)
        if _num(node.get("maxProperties")):
            yield "maxProperties", ("add", extra, None)
            if value:
                yield "maxProperties", ("add", extra, next(iter(value.values())))
        if _num(node.get("minProperties")):
            for name in value:
                yield "minProperties", ("del", name)
        for key in ("dependentRequired", "dependencies"):
            deps = node.get(key)
            if isinstance(deps, dict):
                for name, needs in deps.items():
                    if name in value and isinstance(needs, list):
                        for need in needs:
                            yield key, ("del", need)
        if isinstance(node.get("propertyNames"), dict):
            for name in ("", "!" * 3, "x" * 300, "0"):
                if name not in value:
                    yield "propertyNames", ("add", name, None)
    if isinstance(value, list):
        last = value[-1] if value else None
        if _num(node.get("maxItems")):
            if value:
                yield "maxItems", ("add", None, last)
                yield "maxItems", ("add", None, value[0])
        if _num(node.get("minItems")) and value:
            yield "minItems", ("del", len(value) - 1)
            yield "minItems", ("del", 0)
        if node.get("uniqueItems") is True and value:
            yield "uniqueItems", ("add", None, value[0])
            if len(value) >= 2:
                yield "uniqueItems", ("set_item", len(value) - 1, value[0])
        for kw in ("items", "additionalItems"):
            if node.get(kw) is False:
                yield kw, ("add", None, last)
                yield kw, ("add", None, None)
        if "contains" in node:
            for i in range(len(value)):
                yield "contains", ("del", i)


def _below(bound: Any, integer: bool, step: float) -> Any:
    if integer:
        return math.ceil(bound) - 1
    return bound - step


def _above(bound: Any, integer: bool, step: float) -> Any:
    if integer:
        return math.floor(bound) + 1
    return bound + step


def _not_in(values: list, value: Any) -> list:
    canon = {json_key(v) for v in values}
    cands = []
    if isinstance(value, str):
        cands += [value + "_x", value.upper() + "Z", ""]
    elif _num(value):
        cands += [value + 1, value - 1, value + 0.5]
    elif isinstance(value, bool):
        cands += [not value]
    elif isinstance(value, list):
        cands += [[*value, None], []]
    elif isinstance(value, dict):
        cands += [{**value, "__extra__": None}, {}]
    cands += ["__not_in_enum__", None, 123456789]
    return [c for c in cands if json_key(c) not in canon]


def _fresh_key(value: dict, node: dict) -> str:
    names = set(value) | set(node.get("properties") or {})
    for cand in ("extra", "__extra__", "zz_extra", "__extra_1__"):
        if cand not in names:
            return cand
    return "__extra_2__"


def _generic(value: Any) -> Iterable[tuple[str, tuple]]:
    """(label, op) candidates replacing or reshaping `value` regardless of the schema."""
    for t, sample in _TYPE_SAMPLES.items():
        yield "type:" + t, ("set", sample)
    if isinstance(value, str):
        yield "string", ("set", "")
        yield "string", ("set", value * 3 + "x" * 40)
    elif _num(value):
        for cand in (value + 1, value - 1, -value - 1, value * 1000 + 1, value + 0.5):
            yield "number", ("set", cand)
    elif isinstance(value, list):
        yield "array", ("set", [])
        if value:
            yield "array", ("set", value + value)
            yield "array", ("set", value[:-1])
    elif isinstance(value, dict):
        yield "object", ("set", {})
        for name in value:
            yield "object", ("del", name)
        yield "object", ("add", "__extra__", None)
