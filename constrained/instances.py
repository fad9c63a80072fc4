"""Schema test data: diverse valid instances, near-miss invalid instances, and what they cover.

Contract:
- `InstanceGenerator(schema)` compiles the schema (`grammars.compile_json_schema`, raising `SchemaError`)
  into the same lazily built byte DFA the token index uses. `valid(n, seed=)` returns `n` `Instance`s:
  random walks over that automaton, so every instance is in the grammar's language (valid UTF-8, JSON);
  each is parsed and checked with `jsonschema` (the draft named by `$schema`, 2020-12 by default, formats
  checked) and `Instance.valid` records the verdict (False would be a compiler soundness bug).
- Walk: at each state the live bytes are grouped by next state; a group is drawn (ASCII groups weigh 1, a
  lone backslash `ESCAPE_WEIGHT`, groups of non-ASCII lead bytes `UNICODE_WEIGHT` each), then a byte inside
  it, so "a digit" and "the closing quote" are equally likely and optional members, enum values and lengths
  all get exercised. Per instance a length target is drawn (log-uniform) and a self-loop bias (longer
  strings/digit runs); once the target is passed the walk follows a random shortest completion (BFS levels
  toward an accepting state, cached per state). At an accepting state the walk stops with probability
  `STOP_PROBABILITY` (always when no byte is live). Texts with duplicate object keys or non-finite numbers
  are drawn again.
- `invalid(n, seed=)` returns `NearMiss`es: a valid instance mutated so that `jsonschema` reports errors
  of exactly ONE keyword at one schema location (`violates`, e.g. "maxLength"; `pointer`, the JSON pointer
  of the schema object holding it; `path`, the instance location). Mutations are targeted (drop a required
  member, one past max/minLength/Items/Properties, just outside minimum/maximum/exclusive*, off multipleOf,
  value not in enum/const, extra member where additionalProperties is false, a duplicate item,
  a string breaking pattern/format, ...) and generic (type swaps, emptied/grown strings and arrays); a
  candidate with no error or errors of several keywords is discarded. `violates` is the keyword
  `jsonschema` names, so a mutation inside an `anyOf` branch is reported as violating that `anyOf`.
- `coverage(instances)` maps instances back to the schema (walking instance and schema together: `$ref`,
  `allOf`, the `anyOf`/`oneOf` branches that validate, `if`/`then`/`else`, properties, items): `Coverage`
  with hits per schema pointer, enum values seen per pointer, optional properties present/absent, branches.
- `generate_with_model(schema, n, ...)` samples with `constrained.engine.Engine` under the compiled grammar
  (n choices of one request, seeded), for realistic values.
- `run_instances(args)` is the `constrained instances` command: one compact JSON instance per line; with
  `--invalid` one `{"instance": ..., "violates": kw, "pointer": schema_ptr, "path": instance_ptr}` per line;
  `--coverage` prints the coverage summary as JSON on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.validators import validator_for

from constrained.token_index.automaton import DEAD, LazyDFA
from grammars import JsonSchemaOptions, compile_json_schema
from grammars.flat import json_key  # the compiler's JSON-equality key (1 == 1.0, key order ignored)

UNICODE_WEIGHT = 0.02
ESCAPE_WEIGHT = 0.3  # a group of only `\\` (string escapes)
STOP_PROBABILITY = 0.5
MAX_ATTEMPTS = 20  # draws per requested instance before giving up
_MAX_WALK_DEPTH = 64  # schema/instance nesting followed by the coverage walker


@dataclass(frozen=True)
class Instance:
    value: Any
    text: str  # compact JSON (json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    raw: str = ""  # the walk's own text (may hold whitespace / escapes the compact form drops)
    valid: bool = True  # jsonschema's verdict

    def to_json(self) -> str:
        return self.text


@dataclass(frozen=True)
class NearMiss:
    value: Any
    text: str
    violates: str  # jsonschema keyword, e.g. "maxLength"
    pointer: str  # JSON pointer of the schema object holding the keyword
    path: str  # JSON pointer of the instance location
    mutation: str = ""  # what was done, e.g. "maxLength+1"

    def to_json(self) -> str:
        record = {
            "instance": self.value,
            "violates": self.violates,
            "pointer": self.pointer,
            "path": self.path,
        }
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Coverage:
    pointers: Counter = field(default_factory=Counter)  # schema pointer -> instances using that subschema
    enum_values: dict[str, Counter] = field(default_factory=dict)  # pointer -> canonical value -> hits
    enum_sizes: dict[str, int] = field(default_factory=dict)  # pointer -> number of enum values
    optional: dict[str, list[int]] = field(default_factory=dict)  # property pointer -> [present, absent]
    branches: dict[str, set[int]] = field(default_factory=dict)  # anyOf/oneOf pointer -> branches hit
    branch_sizes: dict[str, int] = field(default_factory=dict)
    instances: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "pointers_hit": len(self.pointers),
            "branches_hit": sum(len(v) for v in self.branches.values()),
            "branches_total": sum(self.branch_sizes.values()),
            "enum_values_hit": sum(len(v) for v in self.enum_values.values()),
            "enum_values_total": sum(self.enum_sizes.values()),
            "optional_total": len(self.optional),
            "optional_both": sum(1 for p, a in self.optional.values() if p and a),
            "optional_present": sum(1 for p, _ in self.optional.values() if p),
        }


class GenerationError(ValueError):
    """No instance could be drawn (e.g. the automaton exceeded its state budget)."""


def _compact(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is unless a lone surrogate (from a `\\uD8xx` escape) forces escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"))
    return text


def _escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _pointer(parts: Iterable[Any]) -> str:
    return "".join("/" + _escape(p) for p in parts)


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate("duplicate key")
    return out


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def make_validator(schema: Any) -> jsonschema.protocols.Validator:
    """The jsonschema validator for `schema`'s draft (2020-12 by default), with format checking."""
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# ----------------------------------------------------------------------------------------------- walks


class _Walker:
    """Random walks over a LazyDFA; per-state byte groups and shortest completions are cached."""

    def __init__(self, dfa: LazyDFA) -> None:
        self.dfa = dfa
        self._groups: dict[int, tuple[list[int], list[bytes], list[float]]] = {}
        self._dist: dict[int, int] = {}

    def groups(self, state: int) -> tuple[list[int], list[bytes], list[float]]:
        got = self._groups.get(state)
        if got is None:
            by_next: dict[int, bytearray] = {}
            for byte, nxt in enumerate(self.dfa.row(state)):
                if nxt != DEAD:
                    by_next.setdefault(nxt, bytearray()).append(byte)
            nexts = list(by_next)
            data = [bytes(by_next[s]) for s in nexts]
            weights = [
                (ESCAPE_WEIGHT if b == b"\\" else 1.0) if b[0] < 0x80 else UNICODE_WEIGHT for b in data
            ]
            got = self._groups[state] = (nexts, data, weights)
        return got

    def distance(self, state: int) -> int:
        """Bytes of the shortest completion of `state` (from the grammar; cached)."""
        dist = self._dist.get(state)
        if dist is None:
            dist = self._dist[state] = len(self.dfa.completion(state))
        return dist

    def close(self, state: int, rng: random.Random, out: bytearray) -> int:
        """Append a random shortest completion of `state`; returns the accepting state reached."""
        while (dist := self.distance(state)) > 0:
            nexts, data, _ = self.groups(state)
            k = rng.choice([i for i, nxt in enumerate(nexts) if self.distance(nxt) == dist - 1])
            out.append(rng.choice(data[k]))
            state = nexts[k]
        return state

    def walk(self, rng: random.Random, target: int, loop_bias: float) -> bytes:
        state = self.dfa.initial
        if state == DEAD:
            raise GenerationError("the schema admits no instance")
        out = bytearray()
        while True:
            nexts, data, weights = self.groups(state)
            if self.dfa.is_final(state) and (not nexts or rng.random() < STOP_PROBABILITY):
                return bytes(out)
            if len(out) >= target:
                self.close(state, rng, out)
                return bytes(out)
            if loop_bias and state in nexts and rng.random() < loop_bias:
                k = nexts.index(state)
            else:
                k = rng.choices(range(len(nexts)), weights)[0]
            out.append(rng.choice(data[k]))
            state = nexts[k]


# ----------------------------------------------------------------------------------------------- schema walk


@dataclass
class _Site:
    """A schema object applying to an instance location."""

    pointer: str
    schema: dict
    path: tuple  # instance path (keys / indices)
    value: Any


class InstanceGenerator:
    def __init__(
        self,
        schema: Mapping[str, Any] | bool,
        options: JsonSchemaOptions | None = None,
        *,
        max_states=200_000,
    ) -> None:
        self.schema = schema
        self.compiled = compile_json_schema(schema, options or JsonSchemaOptions())
        self.dfa = LazyDFA(self.compiled.grammar, max_states=max_states)
        self.validator = make_validator(schema)
        self._walker = _Walker(self.dfa)
        self.rejected_draws = 0  # duplicate keys / non-finite numbers drawn again
        try:
            spec = referencing.jsonschema.specification_with(
                schema.get("$schema", "") if isinstance(schema, dict) else "",
                default=referencing.jsonschema.DRAFT202012,
            )
        except referencing.exceptions.CannotDetermineSpecification:
            spec = referencing.jsonschema.DRAFT202012
        resource = spec.create_resource(schema)
        self._resolver = referencing.Registry().with_resource("", resource).resolver_with_root(resource)
        self._branch_validators: dict[int, Any] = {}

    # ---------------------------------------------------------------- valid
    def accepts(self, text: str) -> bool:
        """Whether the compiled automaton accepts `text` (as UTF-8)."""
        state = self.dfa.initial
        for byte in text.encode():
            if state == DEAD:
                return False
            state = self.dfa.row(state)[byte]
        return self.dfa.is_final(state)

    def draw(self, rng: random.Random) -> Instance:
        for _ in range(MAX_ATTEMPTS):
            target = self.shortest() * rng.choice((1, 1, 2, 3)) + int(math.exp(rng.uniform(0, math.log(800))))
            loop_bias = rng.choice((0.0, 0.0, 0.5, 0.85))
            raw = self._walker.walk(rng, target, loop_bias).decode("utf-8")
            try:
                value = json.loads(raw, object_pairs_hook=_no_duplicates)
            except (_Duplicate, ValueError):
                self.rejected_draws += 1
                continue
            if not _finite(value):
                self.rejected_draws += 1
                continue
            return Instance(value, _compact(value), raw, self.validator.is_valid(value))
        raise GenerationError(f"no usable instance in {MAX_ATTEMPTS} draws")

    def shortest(self) -> int:
        """Bytes of the shortest instance."""
        walker = self._walker
        return walker.distance(self.dfa.initial)

    def valid(self, n: int, *, seed: int = 0) -> list[Instance]:
        rng = random.Random(seed)
        return [self.draw(rng) for _ in range(n)]

    # ---------------------------------------------------------------- schema walk
    def _lookup(self, ref: str, resolver):
        try:
            resolved = resolver.lookup(ref)
        except Exception:  # unresolvable / remote: coverage is best-effort
            return None
        return resolved

    def _is_valid(self, sub: Any, value: Any) -> bool:
        try:
            return self.validator.evolve(schema=sub).is_valid(value)
        except Exception:
            return False

    def sites(self, value: Any) -> list[_Site]:
        """Every (schema object, instance location) pair that applies, in walk order."""
        out: list[_Site] = []
        self._visit(self.schema, "", self._resolver, value, (), out, 0)
        return out

    def _visit(self, node, ptr: str, resolver, value, path: tuple, out: list[_Site], depth: int) -> None:
        if depth > _MAX_WALK_DEPTH or not isinstance(node, dict):
            return
        out.append(_Site(ptr, node, path, value))
        ref = node.get("$ref")
        if isinstance(ref, str):
            resolved = self._lookup(ref, resolver)
            if resolved is not None:
                target = ref[1:] if ref.startswith("#/") else ptr + "/$ref"
                self._visit(resolved.contents, target, resolved.resolver, value, path, out, depth + 1)
        for kw in ("allOf", "anyOf", "oneOf"):
            subs = node.get(kw)
            if isinstance(subs, list):
                for i, sub in enumerate(subs):
                    if kw == "allOf" or self._is_valid(sub, value):
                        self._visit(sub, f"{ptr}/{kw}/{i}", resolver, value, path, out, depth + 1)
        if "if" in node:
            branch = "then" if self._is_valid(node["if"], value) else "else"
            if branch in node:
                self._visit(node[branch], f"{ptr}/{branch}", resolver, value, path, out, depth + 1)
        if isinstance(value, dict):
            props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
            pats = node.get("patternProperties") if isinstance(node.get("patternProperties"), dict) else {}
            for key in ("dependentSchemas", "dependencies"):
                deps = node.get(key)
                if isinstance(deps, dict):
                    for name, sub in deps.items():
                        if name in value and isinstance(sub, dict):
                            self._visit(
                                sub, f"{ptr}/{key}/{_escape(name)}", resolver, value, path, out, depth
                            )
            for name, item in value.items():
                matched = False
                if name in props:
                    matched = True
                    sub_ptr = f"{ptr}/properties/{_escape(name)}"
                    self._visit(props[name], sub_ptr, resolver, item, (*path, name), out, depth + 1)
                for pat, sub in pats.items():
                    try:
                        hit = re.search(pat, name) is not None
                    except re.error:
                        hit = False
                    if hit:
                        matched = True
                        sub_ptr = f"{ptr}/patternProperties/{_escape(pat)}"
                        self._visit(sub, sub_ptr, resolver, item, (*path, name), out, depth + 1)
                if not matched and "additionalProperties" in node:
                    sub_ptr = f"{ptr}/additionalProperties"
                    self._visit(
                        node["additionalProperties"], sub_ptr, resolver, item, (*path, name), out, depth + 1
                    )
        if isinstance(value, list):
            prefix = node.get("prefixItems")
            items = node.get("items")
            if isinstance(items, list):  # draft 4-2019 tuple form
                prefix, items, rest_kw = items, node.get("additionalItems"), "additionalItems"
            else:
                rest_kw = "items"
            prefix = prefix if isinstance(prefix, list) else []
            pfx_kw = "prefixItems" if "prefixItems" in node else "items"
            for i, item in enumerate(value):
                if i < len(prefix):
                    self._visit(prefix[i], f"{ptr}/{pfx_kw}/{i}", resolver, item, (*path, i), out, depth + 1)
                elif items is not None:
                    self._visit(items, f"{ptr}/{rest_kw}", resolver, item, (*path, i), out, depth + 1)

    # ---------------------------------------------------------------- coverage
    def coverage(self, instances: Iterable[Instance | Any]) -> Coverage:
        cov = Coverage()
        for inst in instances:
            value = inst.value if isinstance(inst, Instance | NearMiss) else inst
            cov.instances += 1
            seen: set[str] = set()
            for site in self.sites(value):
                if site.pointer not in seen:
                    seen.add(site.pointer)
                    cov.pointers[site.pointer] += 1
                node = site.schema
                if isinstance(node.get("enum"), list):
                    cov.enum_sizes[site.pointer] = len(node["enum"])
                    canon = {json_key(v) for v in node["enum"]}
                    got = json_key(site.value)
                    if got in canon:
                        cov.enum_values.setdefault(site.pointer, Counter())[got] += 1
                for kw in ("anyOf", "oneOf"):
                    if isinstance(node.get(kw), list):
                        key = f"{site.pointer}/{kw}"
                        cov.branch_sizes[key] = len(node[kw])
                        hit = cov.branches.setdefault(key, set())
                        for i, sub in enumerate(node[kw]):
                            if self._is_valid(sub, site.value):
                                hit.add(i)
                if isinstance(site.value, dict) and isinstance(node.get("properties"), dict):
                    required = (
                        set(node.get("required") or []) if isinstance(node.get("required"), list) else set()
                    )
                    for name in node["properties"]:
                        if name not in required:
                            counts = cov.optional.setdefault(
                                f"{site.pointer}/properties/{_escape(name)}", [0, 0]
                            )
                            counts[0 if name in site.value else 1] += 1
        return cov

    # ---------------------------------------------------------------- invalid
    def check_near_miss(self, value: Any) -> tuple[str, str, str] | None:
        """(keyword, schema pointer, instance pointer) when jsonschema reports errors of exactly one keyword
        at exactly one schema location; else None."""
        try:
            errors = list(self.validator.iter_errors(value))
        except Exception:
            return None
        if not errors:
            return None
        kinds = {(e.validator, tuple(e.absolute_schema_path)) for e in errors}
        if len(kinds) != 1:
            return None
        err = errors[0]
        schema_ptr = _pointer(list(err.absolute_schema_path)[:-1])
        return str(err.validator), schema_ptr, _pointer(err.absolute_path)

    def invalid(self, n: int, *, seed: int = 0, valid: list[Instance] | None = None) -> list[NearMiss]:
        rng = random.Random(seed)
        base = valid if valid is not None else self.valid(max(20, min(n, 100)), seed=seed)
        base = [b for b in base if b.valid]
        by_kind: dict[str, list[tuple[Any, tuple, Any]]] = {}
        for inst in base:
            for site in self.sites(inst.value):
                for label, op in _targeted(site, rng):
                    by_kind.setdefault(label.split("+")[0].split("-")[0], []).append(
                        (inst.value, site.path, op)
                    )
            for path, item in _locations(inst.value):
                for _label, op in _generic(item, rng):
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
                if mutated is _FAIL or not _finite(mutated):
                    continue
                text = _compact(mutated)
                if text in seen:
                    continue
                verdict = self.check_near_miss(mutated)
                if verdict is None:
                    continue
                seen.add(text)
                out.append(NearMiss(mutated, text, *verdict, mutation=kind))
        return out


# ----------------------------------------------------------------------------------------------- mutations

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


def _targeted(site: _Site, rng: random.Random) -> Iterable[tuple[str, tuple]]:
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


def _generic(value: Any, rng: random.Random) -> Iterable[tuple[str, tuple]]:
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


# ----------------------------------------------------------------------------------------------- model path


def generate_with_model(
    schema: Mapping[str, Any] | bool,
    n: int,
    *,
    model: str = "embedded",
    seed: int = 0,
    max_tokens: int = 512,
    temperature: float = 1.0,
    loaded=None,
) -> list[Instance]:
    """`n` instances sampled by a model under the schema's grammar (one request, `n` seeded choices).

    Choices that end by length are completed by the engine's budget closing, so each is a full instance.
    `loaded` (a `constrained.models.LoadedModel`) skips loading `model`."""
    import queue

    from constrained.api import Compiler
    from constrained.engine import ChoiceDelta, Engine, GenerationRequest, RequestFailed, RequestFinished
    from constrained.models import load_model
    from constrained.sampling import SamplingParams

    loaded = loaded or load_model(model)
    tokenizer = loaded.tokenizer
    grammar = Compiler.for_tokenizer(tokenizer, vocab_size=loaded.vocab_size).json_schema(schema)
    messages = [
        {"role": "system", "content": "You produce realistic example JSON data. Answer with JSON only."},
        {
            "role": "user",
            "content": "Give one realistic JSON instance of this JSON schema:\n" + json.dumps(schema),
        },
    ]
    try:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # no chat template: plain prompt
        prompt = messages[0]["content"] + "\n" + messages[1]["content"] + "\n"
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    batch = max(1, min(n, 32))
    engine = Engine(loaded.runtime(batch), tokenizer, max_batch_size=batch)
    events: queue.Queue = queue.Queue()
    try:
        request = GenerationRequest(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            params=SamplingParams(temperature=temperature, seed=seed),
            n=n,
            grammar=grammar,
        )
        engine.submit(request, events.put)
        texts = [""] * n
        while True:
            event = events.get(timeout=600)
            if isinstance(event, ChoiceDelta):
                texts[event.index] += event.text
            elif isinstance(event, RequestFailed):
                raise GenerationError(event.message)
            elif isinstance(event, RequestFinished):
                break
    finally:
        engine.shutdown()
    validator = make_validator(schema)
    out = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            out.append(Instance(None, "", text, False))
            continue
        out.append(Instance(value, _compact(value), text, validator.is_valid(value)))
    return out


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `constrained instances` arguments."""
    parser.add_argument("schema", help="JSON schema file ('-' reads stdin)")
    parser.add_argument("-n", type=int, default=100, help="instances to produce (default 100)")
    parser.add_argument(
        "--invalid",
        action="store_true",
        help='near-miss invalid instances, one {"instance","violates","pointer","path"} per line',
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--model", default=None, help="sample with a model ('embedded', a folder or a .gguf) instead of walks"
    )
    parser.add_argument("--coverage", action="store_true", help="print a coverage summary (JSON) to stderr")


def run_instances(args: argparse.Namespace, out=None, err=None) -> int:
    """Run `constrained instances`; returns the exit status (1 when fewer instances than asked)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if args.n < 0:
        raise ValueError("-n must be >= 0")
    if args.schema == "-":
        schema = json.load(sys.stdin)
    else:
        with open(args.schema, encoding="utf-8") as handle:
            schema = json.load(handle)
    if args.model is not None and args.invalid:
        raise ValueError("--invalid uses random walks; it does not take --model")
    if args.model is not None:
        records: list = generate_with_model(schema, args.n, model=args.model, seed=args.seed)
        gen = None
    else:
        gen = InstanceGenerator(schema)
        records = gen.invalid(args.n, seed=args.seed) if args.invalid else gen.valid(args.n, seed=args.seed)
    for record in records:
        print(record.to_json(), file=out)
    if args.coverage:
        gen = gen or InstanceGenerator(schema)
        print(json.dumps(gen.coverage(records).summary()), file=err)
    if len(records) < args.n:
        print(f"constrained: only {len(records)} of {args.n} instances could be produced", file=err)
        return 1
    return 0
