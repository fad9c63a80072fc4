"""Coverage: which parts of a schema instances exercise.

Contract:
- `SchemaSites(schema, validator).sites(value)` walks instance and schema together and returns every
  `Site` (schema object, its JSON pointer, the instance location and value it applies to), in walk order:
  `$ref` (resolved with `referencing`, unresolvable refs skipped), `allOf`, the `anyOf`/`oneOf` branches
  that validate, `if`/`then`/`else`, `dependentSchemas`/`dependencies`, `properties`,
  `patternProperties`, `additionalProperties`, `prefixItems`/`items`/`additionalItems`; nesting is followed
  to `MAX_WALK_DEPTH`. Best effort: a subschema `jsonschema` cannot evaluate counts as not matching.
- `coverage(instances)` (instances, near misses or plain values) aggregates the sites into a `Coverage`:
  hits per schema pointer, enum values seen per pointer, optional properties present/absent, branches.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.protocols import Validator

from constrained.instances.common import Instance, NearMiss, escape_token
from grammars.flat import json_key  # the compiler's JSON-equality key (1 == 1.0, key order ignored)

if TYPE_CHECKING:
    from referencing._core import Resolved, Resolver

MAX_WALK_DEPTH = 64  # schema/instance nesting followed


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


@dataclass
class Site:
    """A schema object applying to an instance location."""

    pointer: str
    schema: dict
    path: tuple  # instance path (keys / indices)
    value: Any


class SchemaSites:
    """Maps instance values onto the schema objects that apply to them."""

    def __init__(self, schema: Any, validator: Validator) -> None:
        self.schema = schema
        self.validator = validator
        try:
            spec = referencing.jsonschema.specification_with(
                schema.get("$schema", "") if isinstance(schema, dict) else "",
                default=referencing.jsonschema.DRAFT202012,
            )
        except referencing.exceptions.CannotDetermineSpecification:
            spec = referencing.jsonschema.DRAFT202012
        resource = spec.create_resource(schema)
        self._resolver = referencing.Registry().with_resource("", resource).resolver_with_root(resource)

    def is_valid(self, sub: Any, value: Any) -> bool:
        """Whether `value` validates against the subschema `sub` (False when it cannot be evaluated)."""
        try:
            return self.validator.evolve(schema=sub).is_valid(value)
        except Exception:
            return False

    def sites(self, value: Any) -> list[Site]:
        """Every (schema object, instance location) pair that applies, in walk order."""
        out: list[Site] = []
        self._visit(self.schema, "", self._resolver, value, (), out, 0)
        return out

    def coverage(self, instances: Iterable[Instance | NearMiss | Any]) -> Coverage:
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
                            if self.is_valid(sub, site.value):
                                hit.add(i)
                if isinstance(site.value, dict) and isinstance(node.get("properties"), dict):
                    required = (
                        set(node.get("required") or []) if isinstance(node.get("required"), list) else set()
                    )
                    for name in node["properties"]:
                        if name not in required:
                            counts = cov.optional.setdefault(
                                f"{site.pointer}/properties/{escape_token(name)}", [0, 0]
                            )
                            counts[0 if name in site.value else 1] += 1
        return cov

    @staticmethod
    def _lookup(ref: str, resolver: Resolver) -> Resolved | None:
        try:
            return resolver.lookup(ref)
        except Exception:  # unresolvable / remote: coverage is best-effort
            return None

    def _visit(
        self, node: Any, ptr: str, resolver: Resolver, value: Any, path: tuple, out: list[Site], depth: int
    ) -> None:
        if depth > MAX_WALK_DEPTH or not isinstance(node, dict):
            return
        out.append(Site(ptr, node, path, value))
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
                    if kw == "allOf" or self.is_valid(sub, value):
                        self._visit(sub, f"{ptr}/{kw}/{i}", resolver, value, path, out, depth + 1)
        if "if" in node:
            branch = "then" if self.is_valid(node["if"], value) else "else"
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
                                sub, f"{ptr}/{key}/{escape_token(name)}", resolver, value, path, out, depth
                            )
            for name, item in value.items():
                matched = False
                if name in props:
                    matched = True
                    sub_ptr = f"{ptr}/properties/{escape_token(name)}"
                    self._visit(props[name], sub_ptr, resolver, item, (*path, name), out, depth + 1)
                for pat, sub in pats.items():
                    try:
                        hit = re.search(pat, name) is not None
                    except re.error:
                        hit = False
                    if hit:
                        matched = True
                        sub_ptr = f"{ptr}/patternProperties/{escape_token(pat)}"
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
