"""JSON Schema -> rule grammar compiler (the walker).

Contract: :func:`compile_json_schema` returns a :class:`CompiledSchema` whose ``grammar`` (a
:class:`grammars.ir.RuleGrammar`: regex fragments over rules, implicitly anchored) matches only JSON texts of
instances valid under the schema, or raises :class:`SchemaError` naming the first keyword it cannot enforce
exactly.

How: each schema node is *flattened* (``$ref``, ``allOf``, ``anyOf``, ``oneOf`` resolved) into a
disjunction of :class:`Flat` conjunctions of local keywords; each Flat is compiled per instance type.
``enum``/``const`` values are filtered with the ``jsonschema`` validator against every schema node that
applies, so they are exact whatever else the schema says. The walk is memoized per set of schema nodes
(a ``$ref`` counts as its target): a sub-schema used twice becomes one rule, called by id, and a sub-schema
reached again while it is being compiled becomes a recursive call (no unrolling).

Documented restrictions (the generated language is a subset of the valid instances):
- object properties appear in ``properties`` order, declared ones first, then additional ones;
- whitespace only where ``options.whitespace`` allows (after ``{ [ , :`` and before ``} ]``);
- recursion (recursive ``$ref``, unconstrained values ``true``/``{}``) nests to any depth up to
  ``options.stack_limit`` open recursive calls (the automaton's stack);
- numbers: see :mod:`grammars.numbers`; strings: see :mod:`grammars.strings`;
- ``not``, overlapping ``oneOf`` branches, ``if``/``else``: complements (:mod:`grammars.negation`) leave out
  the violations that have no generated form (``pattern``, ``multipleOf``, ...).
Unknown keywords are annotations and are ignored, as the specification says; so are unknown ``format``
values (``format`` is an annotation in 2020-12) while known formats are enforced or rejected.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

from .deferral import Deferral
from .errors import SchemaError, Unsatisfiable
from .flat import ALL_TYPES, Flat, json_key, json_type
from .ir import DEFAULT_STACK_LIMIT, NOTHING, LazyGrammar, RuleGrammar, call, complete, intersection, is_call
from .negation import Negated, complement, negated
from .numbers import Bound, integer_regex, number_regex
from .refs import ROOT_URI, Node, Registry, dialect_of, escape_token
from .regex import (
    MAX_CP,
    RAW_ONLY,
    alt,
    concat_atom,
    cps_class,
    cps_json,
    cps_subtract,
    group,
    lit,
    opt,
    repeat,
    star,
    string_literal,
)
from .stack import deep_recursion
from .strings import (
    ANY_CHAR,
    FORMATS,
    KNOWN_UNSUPPORTED,
    LOOSE_CONTENT,
    anchored_pattern,
    length_regex,
    pattern_regex,
)

COMPILE_SECONDS = 2.0
MAX_ALTERNATIVES = 1024  # flattened alternatives of one node (cross products of anyOf under allOf)
INLINE_LIMIT = 256  # a compiled sub-schema longer than this becomes a rule (called by id, never copied)
SHARED_SUFFIX_LIMIT = 48  # an object layout's suffix used twice becomes a rule above this length
MAX_PATTERN_PROPERTIES = 4  # a key may match any subset of them: 2**4 key classes
MAX_MIN_ITEMS = 4096  # an output needing more items than this cannot fit any token budget
# Sub-schemas compiled one inside another (`properties` in `properties` ...): a limit named in the error;
# the compile raises Python's recursion limit while it runs to fit `FRAMES_PER_LEVEL` frames a level.
# MaskBench's 8,176 schemas need at most 11; objects nested 128 deep need 129; deeper nests of anyOf/not
# cost quadratic time, so the limit stays close.
MAX_SCHEMA_DEPTH = 160
FRAMES_PER_LEVEL = 8

_ANNOTATIONS = {
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "id",
    "$anchor",
    "$defs",
    "definitions",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
    "$vocabulary",
    "$dynamicAnchor",
    "$recursiveAnchor",
}
_HANDLED = {
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "dependentRequired",
    "dependencies",
    "dependentSchemas",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "not",
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
}


@dataclass(frozen=True)
class JsonSchemaOptions:
    whitespace: str = "[ ]?"
    stack_limit: int = DEFAULT_STACK_LIMIT  # open recursive calls at any point of an output
    max_grammar_size: int = 2_000_000  # characters of all rule fragments together
    compile_seconds: float = COMPILE_SECONDS
    max_depth: int = MAX_SCHEMA_DEPTH  # sub-schemas compiled one inside another
    remotes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ExplainEntry:
    pointer: str
    enforced: tuple[str, ...]


@dataclass(frozen=True)
class CompiledSchema:
    """The grammar of a schema and what it enforces where. A lazy compile's grammar is a `LazyGrammar` and
    its ``explain`` covers the sub-schemas compiled so far."""

    grammar: RuleGrammar | LazyGrammar
    explain: tuple[ExplainEntry, ...]

    @property
    def regex(self) -> str:
        """The plain-regex export (``ValueError`` when the schema is recursive)."""
        return complete(self.grammar).to_regex()


def _num(value: Any, keyword: str, pointer: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"{keyword} must be a number", keyword, pointer)
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _count(value: Any, keyword: str, pointer: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(f"{keyword} must be a non-negative integer", keyword, pointer)
    return value


def _tighter_lower(a: Bound | None, b: Bound | None) -> Bound | None:
    if a is None or b is None:
        return a or b
    if a.value != b.value:
        return a if a.value > b.value else b
    return a if a.exclusive else b


def _tighter_upper(a: Bound | None, b: Bound | None) -> Bound | None:
    if a is None or b is None:
        return a or b
    if a.value != b.value:
        return a if a.value < b.value else b
    return a if a.exclusive else b


class _Compiler:
    def __init__(self, schema: Any, options: JsonSchemaOptions) -> None:
        self.deadline = time.monotonic() + options.compile_seconds
        self.options = options
        self.ws = options.whitespace
        self.draft = dialect_of(schema)
        self.registry = Registry(schema, options.remotes, self.draft)
        self.root = schema
        self.explain: dict[str, set[str]] = {}
        self._negated: dict[tuple, Negated] = {}
        self._dropped: list[tuple[str, str]] = []  # (keyword, pointer) whose complement is not generated
        self.rules: list[str] = []
        self.recursive: set[int] = set()
        self.open_content: set[int] = set()  # see `RuleGrammar.open_content`
        self.productive: set[int] = set()  # see `RuleGrammar.productive`
        self.size = 0  # characters of the rules written so far
        self._memo: dict[tuple, str | None] = {}  # node-set key -> fragment (None: unsatisfiable)
        self._open: dict[tuple, int | None] = {}  # keys being compiled -> rule id once called recursively
        self._any_rule: int | None = None
        self._shared: dict[str, str] = {}  # fragment -> call of the rule holding it
        self._validator_registry: referencing.Registry | None = None
        self._validators: dict[str, Any] = {}  # "$ref" of a sub-schema -> its jsonschema validator
        self._depth = 0  # sub-schemas being compiled one inside another
        self._deferral: Deferral | None = None  # set by a lazy compile: which property values may wait
        self.pending: dict[int, list[Node]] = {}  # deferred rule -> the nodes it compiles when first used
        self._deferred: dict[tuple, int] = {}  # memo key -> its deferred rule
        self.overflow: tuple[int, str] | None = None  # depth and pointer where the stack ran out

    # ------------------------------------------------------------ helpers

    def budget(self, rx: str, pointer: str) -> str:
        if self.size + len(rx) > self.options.max_grammar_size:
            raise SchemaError(
                f"grammar exceeds max_grammar_size ({self.options.max_grammar_size} characters)", "$", pointer
            )
        self.check_deadline(pointer)
        return rx

    def check_deadline(self, pointer: str) -> None:
        if time.monotonic() > self.deadline:
            raise SchemaError(f"compilation exceeds {self.options.compile_seconds} s", "$", pointer)

    def add_rule(self, body: str, rule: int | None = None) -> int:
        """Store ``body`` as a rule (a fresh id unless ``rule`` was reserved); returns the id."""
        if rule is None:
            rule = len(self.rules)
            self.rules.append(body)
        else:
            self.rules[rule] = body
        self.size += len(body)
        return rule

    def shared(self, fragment: str, limit: int = INLINE_LIMIT) -> str:
        """``fragment``, or a call of a rule holding it when longer than ``limit`` (a suffix that several
        alternatives share is then written once: object layouts stay linear in the number of properties)."""
        if len(fragment) <= limit:
            return fragment
        done = self._shared.get(fragment)
        if done is None:
            done = self._shared[fragment] = call(self.add_rule(self.budget(fragment, "")))
        return done

    def excluding(self, words: list[str]) -> str:
        """String content (any length) whose decoded value is none of ``words``: a trie of the words whose
        nodes are rules (linear in the words' total length). Every node is `open_content`: a string that is
        a word, or a word's prefix, goes on into one that is not."""
        trie: dict[str, Any] = {}
        for w in words:
            node = trie
            for c in w:
                node = node.setdefault(c, {})
            node[""] = {}
        anything = self.open_rule(group(ANY_CHAR) + "*")
        # a character that is not raw printable ASCII, then anything: shared by the nodes whose children
        # are all `RAW_ONLY` (their other characters are then a small class and this one call)
        not_raw = self.shared(concat_atom(cps_json(cps_subtract([(0, MAX_CP)], RAW_ONLY))) + anything, 0)

        def walk(node: dict[str, Any]) -> str:
            children = tuple(sorted(k for k in node if k))
            parts = [] if "" in node else [""]
            raw = _raw_class_but(children)
            if raw is not None:
                parts += [raw + anything] if raw else []
                parts.append(not_raw)
            elif other := _other_char_forms(children):
                parts.append(other + anything)
            parts += [_char_forms(c) + walk(node[c]) for c in children]  # a form, then the child's call
            return self.open_rule("(?:" + "|".join(parts) + ")")  # atoms' concatenations: no regex scan

        root = walk(trie)
        self.budget("", "")  # the size and the deadline, once for the whole trie
        return root

    def open_rule(self, fragment: str) -> str:
        """A call of a rule holding ``fragment``, JSON-string content that the caller knows every content
        string is a prefix of (`RuleGrammar.open_content`). The caller checks `budget` (once per trie)."""
        done = self._shared.get(fragment)
        if done is None:
            rule = len(self.rules)
            self.rules.append(fragment)
            self.size += len(fragment)
            done = self._shared[fragment] = call(rule)
        self.open_content.add(int(done[3:-1]))
        return done

    def reserve_rule(self) -> int:
        self.rules.append("")
        return len(self.rules) - 1

    def note(self, pointer: str, keyword: str) -> None:
        self.explain.setdefault(pointer, set()).add(keyword)

    def any_value(self) -> str:
        """Call of the (recursive) rule of any JSON value."""
        if self._any_rule is None:
            rule = self._any_rule = self.reserve_rule()
            self.recursive.add(rule)
            self.productive.add(rule)  # `null` ends it
            inner, ws = call(rule), self.ws
            kv = f'"{LOOSE_CONTENT}":{ws}{inner}'
            body = alt(
                [
                    "null",
                    "true",
                    "false",
                    number_regex(None, None) or "",
                    f'"{LOOSE_CONTENT}"',
                    f"\\[{ws}" + opt(f"{inner}(?:,{ws}{inner})*") + f"{ws}\\]",
                    f"\\{{{ws}" + opt(f"{kv}(?:,{ws}{kv})*") + f"{ws}\\}}",
                ]
            )
            self.add_rule(body, rule)
        return call(self._any_rule)

    def literal(self, value: Any) -> str:
        """Regex of the serializations of one JSON value (compact, whitespace where allowed)."""
        ws = self.ws
        if isinstance(value, str):
            return string_literal(value)
        if isinstance(value, dict):
            items = [string_literal(k) + ":" + ws + concat_atom(self.literal(v)) for k, v in value.items()]
            return f"\\{{{ws}" + f",{ws}".join(items) + f"{ws}\\}}"
        if isinstance(value, list):
            return f"\\[{ws}" + f",{ws}".join(concat_atom(self.literal(v)) for v in value) + f"{ws}\\]"
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError("non-finite number")
            if value.is_integer() and abs(value) < 1e16:
                value = int(value)
        return lit(json.dumps(value))

    def valid(self, value: Any, nodes: list[Node]) -> bool:
        """jsonschema's verdict for ``value`` against every node (formats checked)."""
        if self._validator_registry is None:
            spec = referencing.jsonschema.specification_with(
                {
                    4: "http://json-schema.org/draft-04/schema#",
                    6: "http://json-schema.org/draft-06/schema#",
                    7: "http://json-schema.org/draft-07/schema#",
                    2019: "https://json-schema.org/draft/2019-09/schema",
                    2020: "https://json-schema.org/draft/2020-12/schema",
                }[self.draft]
            )
            resources = [
                (ROOT_URI, referencing.Resource.from_contents(self.root, default_specification=spec))
            ]
            if self.registry.root_base != ROOT_URI:
                resources.append((self.registry.root_base, resources[0][1]))
            for uri, doc in self.options.remotes.items():
                resources.append((uri, referencing.Resource.from_contents(doc, default_specification=spec)))
            self._validator_registry = referencing.Registry().with_resources(resources)
            self._validator_cls = jsonschema.validators.validator_for(
                self.root, default=jsonschema.Draft202012Validator
            )
        for node in nodes:
            self.check_deadline(node.pointer)
            if isinstance(node, Negated):
                if self.valid(value, [node.of]):
                    return False
                continue
            if node.schema is True:
                continue
            if node.schema is False:
                return False
            quick = _pattern_verdict(value, node.schema)
            if quick is not None:
                if not quick:
                    return False
                continue
            uri = ROOT_URI if node.base in (ROOT_URI, self.registry.root_base) else node.base
            doc_ptr = self.registry.docs.get(uri, (None, ""))[1]
            local = node.pointer[len(doc_ptr) :] if node.pointer.startswith(doc_ptr) else node.pointer
            try:
                ok = self._validator(f"{uri}#{local}").is_valid(value)
            except Exception as exc:  # unresolvable for `referencing` (a property named `id` in draft 4)
                ok = self._valid_here(value, node, exc)
            if not ok:
                return False
        return True

    def _validator(self, ref: str) -> Any:
        """The jsonschema validator of the sub-schema at ``ref`` (built once: large enums ask it often)."""
        validator = self._validators.get(ref)
        if validator is None:
            validator = self._validators[ref] = self._validator_cls(
                {"$ref": ref},
                registry=self._validator_registry,
                format_checker=self._validator_cls.FORMAT_CHECKER,
            )
        return validator

    def _valid_here(self, value: Any, node: Node, exc: Exception) -> bool:
        """`value` checked against `node`'s schema itself, when its place in the document cannot be resolved
        and it holds no `$ref` (which would need that place); else, or when that fails too, a SchemaError."""
        try:
            if '"$ref"' not in json.dumps(node.schema):
                return self._validator_cls(
                    node.schema, format_checker=self._validator_cls.FORMAT_CHECKER
                ).is_valid(value)
        except Exception as again:
            exc = again
        raise SchemaError(f"cannot check enum value: {exc}", "enum", node.pointer) from exc

    def enum_values(self, f: Flat) -> list[Any]:
        """The values of ``f.enum`` that every source of ``f`` admits. ``enum``, ``const`` and ``type`` are
        already applied to ``f``, so only sources with other keywords are asked (large enums stay linear)."""
        ptr = f.sources[0].pointer if f.sources else ""
        values = [
            v
            for v in f.enum or ()
            if json_type(v) in f.types or json_type(v) == "integer" and "number" in f.types
        ]
        checked = [n for n in f.sources if _needs_validation(n.schema)]
        if not checked:
            return values
        out = []
        for v in values:
            self.check_deadline(ptr)
            if self.valid(v, checked):
                out.append(v)
        return out

    # ------------------------------------------------------------ flattening

    def flatten(self, node: Node, refs: tuple[str, ...] = ()) -> list[Flat]:
        """Disjunction of Flats equivalent to ``node``. ``refs`` are the ``$ref`` targets being flattened: one
        reached again without descending into a value is a cycle that adds nothing (least fixpoint)."""
        if isinstance(node, Negated):
            return self.negate(node.of, refs)
        s = node.schema
        if s is True or s == {}:
            return [Flat([node])]
        if s is False:
            return []
        if not isinstance(s, dict):
            raise SchemaError("a schema must be an object or a boolean", "$", node.pointer)
        base = self.registry.base_of(node)
        node = Node(s, node.pointer, base)
        ptr = node.pointer
        if "$ref" in s:
            self.note(ptr, "$ref")
            target = self.registry.resolve(s["$ref"], base, ptr)
            key = f"{target.base}#{target.pointer}"
            if key in refs:
                raise Unsatisfiable
            sub = self._flatten_nested(target, (*refs, key))
            if self.draft <= 7:
                return sub
            result = self._merge_all([self.local(node)], sub, ptr, "$ref")
        else:
            result = [self.local(node)]
        for kw in ("$dynamicRef", "$recursiveRef"):
            if kw in s:
                raise SchemaError(f"{kw} is not supported", kw, ptr)
        if "allOf" in s:
            self.note(ptr, "allOf")
            for i, sub_schema in enumerate(self._list(s, "allOf", ptr)):
                result = self._merge_all(
                    result, self._flatten_opt(Node(sub_schema, f"{ptr}/allOf/{i}", base), refs), ptr, "allOf"
                )
        if "anyOf" in s:
            self.note(ptr, "anyOf")
            branches: list[Flat] = []
            for i, sub_schema in enumerate(self._list(s, "anyOf", ptr)):
                branches.extend(self._flatten_opt(Node(sub_schema, f"{ptr}/anyOf/{i}", base), refs))
            result = self._merge_all(result, _join_enums(branches), ptr, "anyOf")
        if "oneOf" in s:
            self.note(ptr, "oneOf")
            result = self._one_of(result, node, refs)
        if "not" in s and not _simple_not(s["not"]):
            operand = s["not"]
            for f in result:
                f.nots = [n for n in f.nots if n.schema is not operand]
            before = len(self._dropped)
            result = self._merge_all(result, self.negate(Node(operand, f"{ptr}/not", base), refs), ptr, "not")
            self._check_complement(result, before, ptr)
        if "if" in s and self.draft >= 7:
            result = self._if_then_else(result, node, refs)
        for name, kw, dep in self._dependencies(s):
            if isinstance(dep, list) and all(set(dep) <= set(f.required) for f in result):
                continue  # its dependencies are required anyway
            self.note(ptr, kw)
            here = f"{ptr}/{kw}/{escape_token(name)}"
            anchor = Node(True, here, base)  # a source that checks nothing: enum values keep their own checks
            absent = Flat([anchor], props={name: [Node(False, here, base)]})
            if isinstance(dep, list):
                present = [Flat([anchor], props={name: []}, required=[name, *dep])]
            else:
                present = self._merge_all(
                    [Flat([anchor], props={name: []}, required=[name])],
                    self._flatten_opt(Node(dep, here, base), refs),
                    ptr,
                    kw,
                )
            result = self._merge_all(result, [absent, *present], ptr, kw)
        return result

    def _one_of(self, result: list[Flat], node: Node, refs: tuple[str, ...]) -> list[Flat]:
        """Exactly one branch: each branch's Flats minus every branch they may overlap (`negate`)."""
        ptr, base = node.pointer, node.base
        nodes = [
            Node(b, f"{ptr}/oneOf/{i}", base) for i, b in enumerate(self._list(node.schema, "oneOf", ptr))
        ]
        raw = [self._flatten_opt(n, refs) for n in nodes]
        groups = [self._merge_all(result, r, ptr, "oneOf") for r in raw]
        before = len(self._dropped)
        complements: dict[int, list[Flat]] = {}  # branch j's complement, computed once when first needed
        out: list[Flat] = []
        for i, branch in enumerate(groups):
            for fa in branch:
                self.check_deadline(ptr)
                alts = [fa]
                for j, other in enumerate(groups):
                    # a subset's disjointness proves nothing about the schema it stands for
                    if (
                        j != i
                        and alts
                        and not all(fb.subset_of is None and self._disjoint(fa, fb) for fb in other)
                    ):
                        if j not in complements:
                            complements[j] = self._complement(raw[j], self.value_not(nodes[j]), refs)
                        alts = self._merge_all(alts, complements[j], ptr, "oneOf")
                out.extend(alts)
        self._check_complement(out, before, ptr)
        return out

    def _if_then_else(self, result: list[Flat], node: Node, refs: tuple[str, ...]) -> list[Flat]:
        """``(if and then) or (not if and else)``; a no-op when both branches are trivial."""
        s, ptr, base = node.schema, node.pointer, node.base
        then_, else_ = s.get("then", True), s.get("else", True)
        if then_ in (True, {}) and else_ in (True, {}):
            return result
        self.note(ptr, "if")
        cond = Node(s["if"], f"{ptr}/if", base)
        before = len(self._dropped)
        yes = self._merge_all(
            self._flatten_opt(cond, refs),
            self._flatten_opt(Node(then_, f"{ptr}/then", base), refs),
            ptr,
            "then",
        )
        no = self._merge_all(
            self.negate(cond, refs), self._flatten_opt(Node(else_, f"{ptr}/else", base), refs), ptr, "else"
        )
        out = self._merge_all(result, yes + no, ptr, "if")
        self._check_complement(out, before, ptr)
        return out

    @staticmethod
    def _dependencies(s: dict) -> list[tuple[str, str, Any]]:
        """(property, keyword, what it needs) of ``dependentRequired`` / ``dependentSchemas`` /
        ``dependencies``: a list of names that must be present too, or a schema the object must satisfy;
        each compiles as ``(property absent) or (property present and what it needs)``."""
        out = []
        for kw in ("dependentRequired", "dependentSchemas", "dependencies"):
            value = s.get(kw, {})
            if not isinstance(value, dict):
                continue
            for name, dep in value.items():
                if isinstance(dep, list):
                    names = [d for d in dep if isinstance(d, str)]
                    if names:
                        out.append((name, kw, names))
                elif isinstance(dep, dict | bool) and dep not in (True, {}):
                    out.append((name, kw, dep))
        return out

    def value_not(self, node: Node) -> Negated:
        """The (memoized) `Negated` of `node`: one object per node, so the rule memo recognises it."""
        key = self._key(node)
        res = self._negated.get(key)
        if res is None:
            res = self._negated[key] = negated(node)
        return res

    def negate(self, node: Node, refs: tuple[str, ...]) -> list[Flat]:
        """Flats whose union is the complement of `node` (a subset where `negation` drops keywords)."""
        return self._complement(self._flatten_opt(node, refs), self.value_not(node), refs)

    def _complement(self, flats: list[Flat], source: Negated, refs: tuple[str, ...]) -> list[Flat]:
        """The complement of the union `flats`. Refused when that union is itself a subset (the complement
        of a subset is a superset): a SchemaError naming the keyword that made it one."""
        for f in flats:
            if f.subset_of is not None:
                kw, where = f.subset_of
                raise SchemaError(
                    f"cannot negate a schema whose own complement leaves out {kw} (at {where or '/'})",
                    kw,
                    source.pointer,
                )
        out = [Flat([source])]
        before = len(self._dropped)
        for f in flats:
            c = complement(f, source, self.enum_values, self.value_not)
            alts = c.alternatives + [g for n in c.satisfying for g in self._flatten_opt(n, refs)]
            for kw, p in c.dropped:
                self.note(p, f"{kw} (its complement is not generated)")
            self._dropped.extend(c.dropped)
            out = self._merge_all(out, alts, source.pointer, "not")
        if len(self._dropped) > before:  # left something out: a subset, never to be complemented again
            for f in out:
                f.subset_of = f.subset_of or self._dropped[before]
        return out

    def _check_complement(self, result: list[Flat], before: int, ptr: str) -> None:
        """A construct left with no instance after dropping some complement is refused, naming the keyword."""
        if not result and len(self._dropped) > before:
            kw, where = self._dropped[before]
            raise SchemaError(f"the complement of {kw} (needed at {ptr or '/'}) is not supported", kw, where)

    def _flatten_opt(self, node: Node, refs: tuple[str, ...]) -> list[Flat]:
        try:
            return self._flatten_nested(node, refs)
        except Unsatisfiable:
            return []

    def _flatten_nested(self, node: Node, refs: tuple[str, ...]) -> list[Flat]:
        """``flatten`` of a sub-schema of an ``allOf``/``anyOf``/``oneOf``/``$ref``: one level deeper."""
        self.enter(node.pointer)
        try:
            return self.flatten(node, refs)
        except RecursionError:  # the innermost sub-schema names the place (no call here: the stack is full)
            if self.overflow is None:
                self.overflow = (self._depth, node.pointer)
            raise
        finally:
            self._depth -= 1

    def enter(self, pointer: str) -> None:
        """Count one more sub-schema being compiled inside the others (the caller decrements)."""
        if self._depth >= self.options.max_depth:
            raise SchemaError(
                f"the schema nests deeper than the limit of max_depth={self.options.max_depth} "
                "sub-schemas compiled one inside another",
                "$",
                pointer,
            )
        self._depth += 1

    @staticmethod
    def _list(s: dict, kw: str, ptr: str) -> list:
        value = s[kw]
        if not isinstance(value, list) or not value:
            raise SchemaError(f"{kw} must be a non-empty array", kw, ptr)
        return value

    def _merge_all(self, left: list[Flat], right: list[Flat], ptr: str, kw: str) -> list[Flat]:
        """Every satisfiable conjunction of one Flat of `left` and one of `right` (a cross product, bounded by
        MAX_ALTERNATIVES and the deadline as it grows)."""
        out = []
        for a in left:
            self.check_deadline(ptr)
            for b in right:
                try:
                    out.append(self.merge(a, b, ptr, kw))
                except Unsatisfiable:
                    continue
                if len(out) > MAX_ALTERNATIVES:
                    raise SchemaError("too many alternatives", kw, ptr)
        return out

    def _disjoint(self, a: Flat, b: Flat) -> bool:
        try:
            m = self.merge(a, b, "", "oneOf")
        except Unsatisfiable:
            return True
        except SchemaError:
            return False
        try:
            if m.enum is not None:
                return not self.enum_values(m)
            types = self._types(m)
            if not types:
                return True
            if types == {"object"}:
                for name in m.required:
                    nodes = self._prop_nodes(m, name)
                    if nodes is None:
                        return True
                    flats = self._merge_nodes(nodes)
                    if not flats:
                        return True
                    if all(f.enum is not None and not self.enum_values(f) for f in flats):
                        return True
        except (Unsatisfiable, SchemaError):
            return False
        return False

    def _merge_nodes(self, nodes: list[Node]) -> list[Flat]:
        result = [Flat([])]
        for n in nodes:
            result = self._merge_all(result, self.flatten(n), n.pointer, "allOf")
        return result

    def local(self, node: Node) -> Flat:
        """The local (non-combinator) keywords of ``node``."""
        s, ptr, base = node.schema, node.pointer, node.base
        f = Flat([node])
        for kw in s:
            if kw not in _HANDLED and kw not in _ANNOTATIONS:
                continue
            if kw in _HANDLED and kw not in ("$ref", "allOf", "anyOf", "oneOf", "if", "then", "else"):
                self.note(ptr, kw)

        def sub(kw: str, *path: str | int) -> Node:
            value = s[kw]
            for p in path:
                value = value[p]
            return Node(value, "/".join([ptr, escape_token(kw), *(escape_token(str(p)) for p in path)]), base)

        if "type" in s:
            t = s["type"]
            ts = [t] if isinstance(t, str) else t
            if not isinstance(ts, list) or not all(isinstance(x, str) and x in ALL_TYPES for x in ts):
                raise SchemaError(f"unknown type {t!r}", "type", ptr)
            types = set(ts)
            if "number" in types:
                types.add("integer")
            f.types = frozenset(types)
        if "const" in s:
            f.enum = [s["const"]]
        if "enum" in s:
            if not isinstance(s["enum"], list):
                raise SchemaError("enum must be an array", "enum", ptr)
            f.enum = [
                v for v in s["enum"] if f.enum is None or any(json_key(v) == json_key(e) for e in f.enum)
            ]
        # numbers
        ex_min, ex_max = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        if "minimum" in s:
            f.lower = Bound(_num(s["minimum"], "minimum", ptr), ex_min is True)
        if "maximum" in s:
            f.upper = Bound(_num(s["maximum"], "maximum", ptr), ex_max is True)
        if ex_min is not None and not isinstance(ex_min, bool):
            f.lower = _tighter_lower(f.lower, Bound(_num(ex_min, "exclusiveMinimum", ptr), True))
        if ex_max is not None and not isinstance(ex_max, bool):
            f.upper = _tighter_upper(f.upper, Bound(_num(ex_max, "exclusiveMaximum", ptr), True))
        if "multipleOf" in s:
            m = _num(s["multipleOf"], "multipleOf", ptr)
            if m <= 0:
                raise SchemaError("multipleOf must be positive", "multipleOf", ptr)
            f.multiple.append((m, ptr))
        # strings
        if "minLength" in s:
            f.min_len = _count(s["minLength"], "minLength", ptr)
        if "maxLength" in s:
            f.max_len = _count(s["maxLength"], "maxLength", ptr)
        if "pattern" in s:
            if not isinstance(s["pattern"], str):
                raise SchemaError("pattern must be a string", "pattern", ptr)
            f.patterns.append((s["pattern"], ptr))
        if "format" in s and isinstance(s["format"], str):
            f.formats.append((s["format"], ptr))
        # objects
        if "properties" in s:
            if not isinstance(s["properties"], dict):
                raise SchemaError("properties must be an object", "properties", ptr)
            f.props = {k: [sub("properties", k)] for k in s["properties"]}
        if "required" in s:
            req = s["required"]
            if isinstance(req, list):
                f.required = list(dict.fromkeys(r for r in req if isinstance(r, str)))
            elif req is not True and req is not False:
                raise SchemaError("required must be an array", "required", ptr)
        for name, value in s.get("properties", {}).items():
            if self.draft <= 4 and isinstance(value, dict) and value.get("required") is True:
                if name not in f.required:
                    f.required.append(name)
        if "patternProperties" in s:
            pp = s["patternProperties"]
            if not isinstance(pp, dict):
                raise SchemaError("patternProperties must be an object", "patternProperties", ptr)
            f.pattern_props = [
                (p, f"{ptr}/patternProperties/{escape_token(p)}", sub("patternProperties", p)) for p in pp
            ]
        if "additionalProperties" in s:
            ap = s["additionalProperties"]
            f.additional = None if ap is True or ap == {} else [sub("additionalProperties")]
        if "minProperties" in s:
            f.min_props = _count(s["minProperties"], "minProperties", ptr)
        if "maxProperties" in s:
            f.max_props = _count(s["maxProperties"], "maxProperties", ptr)
        if "propertyNames" in s and s["propertyNames"] not in (True, {}):
            f.prop_names = [sub("propertyNames")]
        for kw in ("unevaluatedProperties", "unevaluatedItems"):
            if kw in s and s[kw] not in (True, {}):
                raise SchemaError(f"{kw} is not supported", kw, ptr)
        # arrays
        items = s.get("items")
        if isinstance(items, list):
            f.prefix = [[sub("items", i)] for i in range(len(items))]
            if "additionalItems" in s and s["additionalItems"] not in (True, {}):
                f.items = [sub("additionalItems")]
        elif "items" in s and items not in (True, {}):
            f.items = [sub("items")]
        if "prefixItems" in s:
            if not isinstance(s["prefixItems"], list):
                raise SchemaError("prefixItems must be an array", "prefixItems", ptr)
            f.prefix = [[sub("prefixItems", i)] for i in range(len(s["prefixItems"]))]
        if "minItems" in s:
            f.min_items = _count(s["minItems"], "minItems", ptr)
        if "maxItems" in s:
            f.max_items = _count(s["maxItems"], "maxItems", ptr)
        if s.get("uniqueItems") is True:
            f.unique = ptr
        if "contains" in s:
            lo = _count(s.get("minContains", 1), "minContains", ptr) if self.draft >= 2019 else 1
            hi = (
                _count(s["maxContains"], "maxContains", ptr)
                if self.draft >= 2019 and "maxContains" in s
                else None
            )
            f.contains = [(sub("contains"), lo, hi)]
        if "not" in s:
            f.nots = [sub("not")]
        return f

    def merge(self, a: Flat, b: Flat, ptr: str, kw: str) -> Flat:
        """Conjunction of two Flats; Unsatisfiable when provably empty, SchemaError when not representable."""
        if not b.sources:
            a, b = b, a
        if not a.sources:
            return b
        f = Flat(a.sources + b.sources)
        f.types = a.types & b.types
        if not f.types:
            raise Unsatisfiable
        if a.enum is not None and b.enum is not None:
            keys = {json_key(v) for v in b.enum}
            f.enum = [v for v in a.enum if json_key(v) in keys]
        else:
            f.enum = a.enum if a.enum is not None else b.enum
        if f.enum is not None:
            f.enum = [
                v
                for v in f.enum
                if json_type(v) in f.types or json_type(v) == "integer" and "number" in f.types
            ]
            if not f.enum:
                raise Unsatisfiable
        f.lower = _tighter_lower(a.lower, b.lower)
        f.upper = _tighter_upper(a.upper, b.upper)
        f.multiple = a.multiple + b.multiple
        f.min_len, f.max_len = max(a.min_len, b.min_len), _min_opt(a.max_len, b.max_len)
        f.patterns = a.patterns + b.patterns
        f.not_patterns = a.not_patterns + b.not_patterns
        f.formats = a.formats + b.formats
        # objects
        names = list(dict.fromkeys([*a.props, *b.props]))
        for name in names:
            na, nb = self._prop_nodes(a, name), self._prop_nodes(b, name)
            if na is None or nb is None:
                if name in a.required or name in b.required:
                    raise Unsatisfiable
                f.props[name] = [Node(False, ptr, ROOT_URI)]
            else:
                f.props[name] = na + nb
        f.required = list(dict.fromkeys([*a.required, *b.required]))
        if a.pattern_props and b.pattern_props:
            if a.additional is not None or b.additional is not None:
                raise SchemaError("cannot combine two patternProperties with additionalProperties", kw, ptr)
            f.pattern_props = a.pattern_props + b.pattern_props  # a key takes those of both it matches
        elif a.pattern_props or b.pattern_props:
            pp_side, other = (a, b) if a.pattern_props else (b, a)
            if other.additional is not None:
                raise SchemaError("cannot combine patternProperties with additionalProperties", kw, ptr)
            f.pattern_props = pp_side.pattern_props
        if a.additional is None or b.additional is None:
            f.additional = a.additional if b.additional is None else b.additional
        else:
            f.additional = a.additional + b.additional
        f.min_props, f.max_props = max(a.min_props, b.min_props), _min_opt(a.max_props, b.max_props)
        f.prop_names = a.prop_names + b.prop_names
        # arrays
        n = max(len(a.prefix), len(b.prefix))
        for i in range(n):
            pa = a.prefix[i] if i < len(a.prefix) else a.items
            pb = b.prefix[i] if i < len(b.prefix) else b.items
            f.prefix.append((pa or []) + (pb or []))
        if a.items is None or b.items is None:
            f.items = a.items if b.items is None else b.items
        else:
            f.items = a.items + b.items
        f.min_items, f.max_items = max(a.min_items, b.min_items), _min_opt(a.max_items, b.max_items)
        f.unique = a.unique if a.unique is not None else b.unique
        f.contains = a.contains + b.contains
        f.nots = a.nots + b.nots
        f.subset_of = a.subset_of or b.subset_of
        return f

    def _prop_nodes(self, f: Flat, name: str) -> list[Node] | None:
        """Nodes constraining the value of property ``name`` in ``f``; None when it may not appear."""
        if name in f.props:  # and the schemas of the patterns it matches
            nodes = list(f.props[name])
            key = json.dumps(name)[1:-1]
            nodes += [n for p, pptr, n in f.pattern_props if re.fullmatch(pattern_regex(p, pptr), key)]
        else:
            nodes = []
            matched = False
            for pattern, pptr, pnode in f.pattern_props:
                if re.fullmatch(pattern_regex(pattern, pptr), json.dumps(name)[1:-1]):
                    nodes.append(pnode)
                    matched = True
            if not matched and f.additional is not None:
                nodes.extend(f.additional)
        if any(n.schema is False for n in nodes):
            return None
        return nodes

    # ------------------------------------------------------------ compiling

    def compile_nodes(self, nodes: list[Node]) -> str:
        """Fragment of the values valid under every node; Unsatisfiable when none.

        Memoized per node set: a long result, or one used a second time, becomes a rule called by id; a node
        set reached again while it is being compiled becomes a recursive call of its rule."""
        key = tuple(self._key(n) for n in nodes)
        if key in self._memo:
            done = self._memo[key]
            if done is None:
                raise Unsatisfiable
            if len(done) > SHARED_SUFFIX_LIMIT and not is_call(done):  # used again: a rule from now on
                done = self._memo[key] = call(self.add_rule(done))
            return done
        if key in self._open:
            rule = self._open[key]
            if rule is None:
                rule = self._open[key] = self.reserve_rule()
                self.recursive.add(rule)
            return call(rule)
        pointer = nodes[0].pointer if nodes else ""
        self.check_deadline(pointer)
        self.enter(pointer)
        self._open[key] = None
        try:
            body = self._compile_nodes(nodes)
        except Unsatisfiable:
            rule = self._open.pop(key)
            if rule is not None:
                self.add_rule(NOTHING, rule)
            self._memo[key] = None
            raise
        except RecursionError:  # the innermost sub-schema names the place (no call here: the stack is full)
            if self.overflow is None:
                self.overflow = (self._depth, pointer)
            raise
        finally:
            self._depth -= 1
        rule = self._open.pop(key)
        if rule is not None or len(body) > INLINE_LIMIT:
            body = call(self.add_rule(self.budget(body, nodes[0].pointer if nodes else ""), rule))
        self._memo[key] = body
        return body

    def property_value(self, nodes: list[Node]) -> str:
        """Fragment of a property's value: a call of a deferred rule where the sub-schema may wait
        (`grammars.deferral`: it cannot fail nor be empty, and is not compiled yet), else `compile_nodes`."""
        if not nodes:
            return self.any_value()
        if self._deferral is None or len(nodes) != 1:
            return self.compile_nodes(nodes)
        key = (self._key(nodes[0]),)
        rule = self._deferred.get(key)
        if rule is None:
            if key in self._memo or key in self._open or not self._deferral.ready(nodes[0]):
                return self.compile_nodes(nodes)
            rule = self._deferred[key] = self.reserve_rule()
            self.pending[rule] = nodes
        return call(rule)

    def write_pending(self, rule: int) -> None:
        """Compile deferred rule `rule` (`LazyGrammar`'s writer), under its own compile deadline."""
        nodes = self.pending[rule]
        self.deadline = time.monotonic() + self.options.compile_seconds
        with deep_recursion(200 + FRAMES_PER_LEVEL * self.options.max_depth):
            try:
                body = self.compile_nodes(nodes)
            except Unsatisfiable:  # `Deferral` admitted it: a bug, reported as a refusal
                raise SchemaError("a deferred sub-schema admits no instance", "$", nodes[0].pointer) from None
        self.add_rule(body, rule)
        del self.pending[rule]

    def _key(self, node: Node) -> tuple:
        """Memo key of a node: a pure ``$ref`` counts as its target."""
        for _ in range(64):
            s = node.schema
            if not (isinstance(s, dict) and "$ref" in s):
                break
            if self.draft > 7 and any(k not in _ANNOTATIONS and k != "$ref" for k in s):
                break
            node = self.registry.resolve(s["$ref"], self.registry.base_of(node), node.pointer)
        return (node.base, node.pointer, id(node.schema))

    def _compile_nodes(self, nodes: list[Node]) -> str:
        if all(n.schema is True or n.schema == {} for n in nodes):
            return self.any_value()
        flats = [Flat([])]
        for n in nodes:
            flats = self._merge_all(flats, self.flatten(n), n.pointer, "allOf")
        parts = []
        for f in flats:
            try:
                parts.append(self.compile_flat(f))
            except Unsatisfiable:
                continue
        if not parts:
            raise Unsatisfiable
        return self.budget(alt(parts), nodes[0].pointer if nodes else "")

    def _types(self, f: Flat) -> set[str]:
        types = set(f.types)
        for node in f.nots:
            s = node.schema
            if isinstance(s, dict) and set(s) - _ANNOTATIONS == {"type"}:
                ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
                for t in ts:
                    types.discard(t)
                    if t == "number":
                        types.discard("integer")
                if "integer" in ts and "number" in types:
                    raise SchemaError("not integer within number is not supported", "not", node.pointer)
        return types

    def compile_flat(self, f: Flat) -> str:
        ptr = f.sources[0].pointer if f.sources else ""
        types = self._types(f)
        if f.enum is not None:
            values = self.enum_values(f)
            if not values:
                raise Unsatisfiable
            return alt(self.literal(v) for v in dict((json_key(v), v) for v in values).values())
        excluded, forbidden = self._nots(f, types)
        parts = []
        for t in ("null", "boolean", "integer", "number", "string", "array", "object"):
            if t not in types or (t == "integer" and "number" in types):
                continue
            try:
                if t == "null":
                    parts.append("null")
                elif t == "boolean":
                    parts.append("true|false")
                elif t in ("integer", "number"):
                    parts.append(self.compile_number(f, t == "integer"))
                elif t == "string":
                    parts.append('"' + self.string_content(f, excluded) + '"')
                elif t == "array":
                    parts.append(self.compile_array(f))
                else:
                    parts.append(self.compile_object(f, forbidden))
            except Unsatisfiable:
                continue
        if not parts:
            raise Unsatisfiable
        return self.budget(alt(parts), ptr)

    def _nots(self, f: Flat, types: set[str]) -> tuple[list[str], set[str]]:
        """Strings excluded and property names forbidden by the ``not``s left in ``f``: the forms
        `_simple_not` lets through (type-only ones are done in `_types`; `flatten` complements the others)."""
        excluded: list[str] = []
        forbidden: set[str] = set()
        for node in f.nots:
            s = node.schema
            if s is False:
                continue
            if s is True:
                raise Unsatisfiable
            if not isinstance(s, dict):
                raise SchemaError("not must be a schema", "not", node.pointer)
            keys = set(s) - _ANNOTATIONS
            if not keys:  # `not: {}`: nothing
                raise Unsatisfiable
            if "required" in keys:
                forbidden.add(s["required"][0])
            elif keys != {"type"}:
                excluded += s.get("enum", []) + ([s["const"]] if "const" in s else [])
        return excluded, forbidden

    def compile_number(self, f: Flat, integer: bool) -> str:
        ptr = f.sources[0].pointer
        lower, upper = f.lower, f.upper
        step: Decimal | None = None
        for m, mptr in f.multiple:
            if m == m.to_integral_value():
                if step is not None and step != m:
                    raise SchemaError("several multipleOf values", "multipleOf", mptr)
                step = m
                integer = True
            elif not integer:
                raise SchemaError("non-integer multipleOf is not supported", "multipleOf", mptr)
        if integer:
            lo = None if lower is None else _int_lower(lower)
            hi = None if upper is None else _int_upper(upper)
            if step is not None and step != 1:
                return self._multiples(int(step), lo, hi, f.multiple[0][1])
            rx = integer_regex(lo, hi)
        else:
            rx = number_regex(lower, upper)
        if rx is None:
            raise Unsatisfiable
        return self.budget(rx, ptr)

    def _multiples(self, k: int, lo: int | None, hi: int | None, ptr: str) -> str:
        if lo is not None and hi is not None and (hi - lo) // k <= 256:
            first = -(-lo // k) * k
            values = list(range(first, hi + 1, k))
            if not values:
                raise Unsatisfiable
            return alt(str(v) for v in values)
        j = next((j for j in range(1, 4) if 10**j % k == 0), None)
        if j is None or lo is not None and lo not in (0, 1) or hi is not None:
            raise SchemaError("multipleOf needs small bounds or a divisor of 1000", "multipleOf", ptr)
        small = [str(v) for v in range(0 if lo != 1 else k, 10**j, k) if v >= (lo or 0)]
        suffixes = alt(str(v).zfill(j) for v in range(0, 10**j, k))
        big = "[1-9][0-9]*" + concat_atom(suffixes)
        pos = alt([*small, big])
        if lo is None:
            return alt([pos, "-" + concat_atom(alt([*[s for s in small if s != "0"], big]))])
        return pos

    def string_content(self, f: Flat, excluded: list[str]) -> str:
        """Fragment of the content (between the quotes) of the valid strings."""
        ptr = f.sources[0].pointer
        lo, hi = f.min_len, f.max_len
        if hi is not None and hi < lo:
            raise Unsatisfiable
        formats = []
        for fmt, fptr in f.formats:
            if fmt in FORMATS:
                formats.append((fmt, fptr))
            elif fmt in KNOWN_UNSUPPORTED:
                raise SchemaError(f"format {fmt!r} is not supported", "format", fptr)
        pieces: list[tuple[str, int, int | None, str, str]] = []  # rx, lo, hi, keyword, pointer
        for fmt, fptr in formats:
            rx, flo, fhi = FORMATS[fmt]
            pieces.append((rx, flo, fhi, "format", fptr))
        for pattern, pptr in f.patterns:
            anchored = anchored_pattern(pattern, pptr)
            if anchored is not None:
                pieces.append((*anchored, "pattern", pptr))
            else:
                pieces.append((pattern_regex(pattern, pptr), 0, None, "pattern", pptr))
        contents = [rx for rx, *_ in pieces]  # the string's content matches all of these (an intersection)
        if excluded:
            contents.append(self.excluding(excluded))
        unmatched = [pattern_regex(pattern, pptr) for pattern, pptr in f.not_patterns]
        if unmatched:  # complements are taken among the generated encodings: no lone surrogate, unlike LOOSE
            contents.append(length_regex(lo, hi))
            lo, hi = 0, None
        elif len(pieces) == 1 and not excluded:
            rx, plo, phi, kw, kptr = pieces[0]
            simple = _simple_repeat(f.patterns[0][0], kptr) if kw == "pattern" else None
            if plo >= lo and (hi is None or (phi is not None and phi <= hi)):
                lo, hi = 0, None  # the bounds add nothing
            elif simple is not None:  # `^X{a,b}$`: one repeat with merged bounds
                atom, alo, ahi = simple
                lo, hi = max(lo, alo), _min_opt(hi, ahi)
                if hi is not None and hi < lo:
                    raise Unsatisfiable
                contents, lo, hi = [repeat(atom, lo, hi)], 0, None
        if lo or hi is not None or not contents:
            contents.append(LOOSE_CONTENT if lo == 0 and hi is None else length_regex(lo, hi))
        if len(contents) == 1 and not unmatched:
            return self.budget(contents[0], ptr)
        return intersection(
            [self.add_rule(self.budget(c, ptr)) for c in contents],
            [self.add_rule(self.budget(c, ptr)) for c in unmatched],
        )

    def compile_array(self, f: Flat) -> str:
        ptr = f.sources[0].pointer
        ws = self.ws
        mn, mx = f.min_items, f.max_items
        elems: list[str] = []
        for i, nodes in enumerate(f.prefix):
            if mx is not None and i >= mx:
                break
            try:
                elems.append(self.compile_nodes(nodes) if nodes else self.any_value())
            except Unsatisfiable:
                mx = i
                break
        rest: str | None
        if mx is not None and len(elems) >= mx:
            rest = None
        elif f.items is None:
            rest = self.any_value()
        else:
            try:
                rest = self.compile_nodes(f.items)
            except Unsatisfiable:
                rest = None
        if rest is None:
            mx = len(elems) if mx is None else min(mx, len(elems))
        if mx is not None and mn > mx:
            raise Unsatisfiable
        if f.contains:
            return self._contains(f, elems, rest, mn, mx)
        if f.unique is not None and (mx is None or mx > 1):
            return self._unique(f, elems, mn, mx)
        k = len(elems)

        def seg(i: int) -> str:
            sep = "" if i == 0 else "," + ws
            if i == k:
                if rest is None:
                    return ""
                a = max(0, mn - k)
                b = None if mx is None else mx - k
                if b == 0:
                    return ""
                if i == 0:
                    body = concat_atom(rest) + repeat(
                        f",{ws}{concat_atom(rest)}", max(a - 1, 0), None if b is None else b - 1
                    )
                    return body if a > 0 else opt(body)
                return repeat(f",{ws}{concat_atom(rest)}", a, b)
            s = sep + concat_atom(elems[i]) + seg(i + 1)
            return s if i < mn else opt(s)

        if mn > MAX_MIN_ITEMS:
            raise SchemaError(f"minItems above the limit ({MAX_MIN_ITEMS})", "minItems", ptr)
        return self.budget(f"\\[{ws}" + seg(0) + f"{ws}\\]", ptr)

    def _contains(self, f: Flat, elems: list[str], rest: str | None, mn: int, mx: int | None) -> str:
        node, lo, hi = f.contains[0]
        if (
            len(f.contains) > 1
            or elems
            or f.items is not None
            or f.unique is not None
            or lo != 1
            or hi is not None
            or mn > 1
            or mx is not None
        ):
            raise SchemaError(
                "contains is only supported alone on an unconstrained array", "contains", node.pointer
            )
        c = self.compile_nodes([node])
        ws = self.ws
        a = concat_atom(self.any_value())
        return self.budget(f"\\[{ws}(?:{a},{ws})*{concat_atom(c)}(?:,{ws}{a})*{ws}\\]", node.pointer)

    def _unique(self, f: Flat, elems: list[str], mn: int, mx: int | None) -> str:
        ptr = f.unique or ""
        values = self._finite(f.items or []) if not f.prefix and f.items else None
        if values is None or mn > 1 or (mx is not None and mx < len(values)):
            raise SchemaError("uniqueItems needs a small finite item domain", "uniqueItems", ptr)
        lits = [self.literal(v) for v in values]
        return self.budget(
            f"\\[{self.ws}" + self._layout([(x, False) for x in lits], None, mn > 0) + f"{self.ws}\\]", ptr
        )

    def _finite(self, nodes: list[Node]) -> list[Any] | None:
        values: dict[str, Any] = {}
        for flat in self._merge_nodes(nodes):
            if flat.enum is not None:
                found = self.enum_values(flat)
            elif self._types(flat) <= {"null", "boolean"} and not flat.nots:
                found = [v for v in (None, True, False) if json_type(v) in flat.types]
            else:
                return None
            values.update((json_key(v), v) for v in found)
        return list(values.values()) if len(values) <= 16 else None

    def _layout(self, members: list[tuple[str, bool]], extra: str | None, nonempty: bool) -> str:
        """Comma-separated members in order (required flag each), then ``extra`` repeated; no counts."""
        ws = self.ws
        n = len(members)
        # Members up to the first required one may start the object: their text and the suffix after them
        # are used twice (as a start and in the chain), so long ones become rules (linear size).
        k = next((i for i, (_, req) in enumerate(members) if req), n - 1)
        members = [(self.shared(rx) if 1 <= i <= k else rx, req) for i, (rx, req) in enumerate(members)]
        after: list[str] = [""] * (n + 1)  # members i.. when something was already emitted
        for i in range(n - 1, 0, -1):
            rx, req = members[i]
            item = f",{ws}{concat_atom(rx)}"
            after[i] = (item if req else opt(item)) + after[i + 1]
            if i <= k + 1:
                after[i] = self.shared(after[i], SHARED_SUFFIX_LIMIT)
        first: str | None = None  # members i.. when nothing was emitted yet (non-empty)
        for i in range(k, -1, -1):
            rx, req = members[i]
            here = concat_atom(rx) + after[i + 1]
            first = here if req else self.shared(alt([here] + ([first] if first else [])))
        any_required = any(req for _, req in members)
        if extra is not None:
            tail = star(f",{ws}{concat_atom(extra)}")
            head = first if any_required else alt([first, extra] if first else [extra])
            first = concat_atom(head) + tail
        if first is None:
            return ""
        return first if nonempty or any_required else opt(first)

    def compile_object(self, f: Flat, forbidden: set[str]) -> str:
        ptr = f.sources[0].pointer
        ws = self.ws
        names = list(f.props)
        for r in f.required:
            if r not in f.props:
                names.append(r)
        members: list[tuple[str, bool]] = []
        declared_keys = set(names) | forbidden
        for name in names:
            required = name in f.required
            if name in forbidden:
                if required:
                    raise Unsatisfiable
                continue
            if f.prop_names and not self.valid(name, f.prop_names):
                if required:
                    raise Unsatisfiable
                continue
            nodes = self._prop_nodes(f, name)
            try:
                if nodes is None:
                    raise Unsatisfiable
                value = self.property_value(nodes)
            except Unsatisfiable:
                if required:
                    raise
                continue
            members.append((string_literal(name) + ":" + ws + concat_atom(value), required))
        extra = self._extra(f, declared_keys)
        n_req = sum(1 for _, r in members if r)
        if f.min_props > n_req or (
            f.max_props is not None and (f.max_props < len(members) or extra is not None)
        ):
            if f.max_props is not None and f.max_props < n_req:
                raise Unsatisfiable
            body = self._counted_layout(members, extra, f.min_props, f.max_props, ptr)
        else:
            body = self._layout(members, extra, False)
        return self.budget(f"\\{{{ws}" + body + f"{ws}\\}}", ptr)

    def _counted_layout(
        self, members: list[tuple[str, bool]], extra: str | None, mn: int, mx: int | None, ptr: str
    ) -> str:
        ws = self.ws
        if sum(1 for _, r in members if not r) > 8:
            raise SchemaError("min/maxProperties with many optional properties", "minProperties", ptr)

        def gen(i: int, c: int) -> str | None:
            if mx is not None and c > mx:
                return None
            if i == len(members):
                a = max(0, mn - c)
                b = None if mx is None else mx - c
                if extra is None:
                    return "" if a == 0 else None
                if c == 0:
                    if b == 0:
                        return "" if a == 0 else None
                    body = concat_atom(extra) + repeat(
                        f",{ws}{concat_atom(extra)}", max(a - 1, 0), None if b is None else b - 1
                    )
                    return body if a > 0 else opt(body)
                return repeat(f",{ws}{concat_atom(extra)}", a, b)
            rx, req = members[i]
            sep = "" if c == 0 else "," + ws
            take = gen(i + 1, c + 1)
            options = [] if take is None else [sep + concat_atom(rx) + take]
            if not req:
                skip = gen(i + 1, c)
                if skip is not None:
                    options.append(skip)
            if not options:
                return None
            return alt(options)

        body = gen(0, 0)
        if body is None:
            raise Unsatisfiable
        return body

    def _extra(self, f: Flat, declared: set[str]) -> str | None:
        """Regex of one additional ``"key":value`` member, or None when none is allowed."""
        ws = self.ws
        if f.pattern_props:
            if f.prop_names:
                raise SchemaError(
                    "propertyNames with patternProperties", "propertyNames", f.prop_names[0].pointer
                )
            return self._pattern_members(f.pattern_props, declared)
        if f.additional is not None and any(n.schema is False for n in f.additional):
            return None
        if f.prop_names:
            key_rx = self._names(f, declared)
        else:
            key_rx = self.excluding(sorted(declared))
        if key_rx is None:
            return None
        try:
            value = self.compile_nodes(f.additional) if f.additional else self.any_value()
        except Unsatisfiable:
            return None
        return f'"{key_rx}":{ws}{concat_atom(value)}'

    def _pattern_members(self, pattern_props: list[tuple[str, str, Node]], declared: set[str]) -> str | None:
        """Additional members whose keys match patterns: per set of patterns a key matches (and none of
        the others: a complement operand), the value satisfies all their schemas. Keys matching no pattern
        are not generated (a documented restriction)."""
        if len(pattern_props) > MAX_PATTERN_PROPERTIES:
            pptr = pattern_props[MAX_PATTERN_PROPERTIES][1]
            raise SchemaError(
                f"more than {MAX_PATTERN_PROPERTIES} patternProperties", "patternProperties", pptr
            )
        regexes = [self.add_rule(pattern_regex(pattern, pptr)) for pattern, pptr, _ in pattern_props]
        others = [self.add_rule(self.excluding(sorted(declared)))] if declared else []
        members = []
        for chosen in range(1, 2 ** len(pattern_props)):
            picked = [i for i in range(len(pattern_props)) if chosen >> i & 1]
            try:
                value = self.compile_nodes([pattern_props[i][2] for i in picked])
            except Unsatisfiable:
                continue
            key = intersection(
                [regexes[i] for i in picked] + others,
                [rule for i, rule in enumerate(regexes) if not chosen >> i & 1],
            )
            members.append(f'"{key}":{self.ws}{concat_atom(value)}')
        return alt(members) if members else None

    def _names(self, f: Flat, declared: set[str]) -> str | None:
        finite = self._finite(f.prop_names)
        if finite is not None:
            names = [v for v in finite if isinstance(v, str) and v not in declared]
            return alt(concat_atom(string_literal(n)[1:-1]) for n in names) if names else None
        flats = self._merge_nodes(f.prop_names)
        parts = []
        for flat in flats:
            flat = replace(flat, types=flat.types & {"string"})
            if not flat.types:
                continue
            try:  # an additional name: valid under propertyNames and none of the declared ones
                excluded = self._nots(flat, {"string"})[0] + sorted(declared)
                parts.append(self.string_content(flat, excluded))
            except Unsatisfiable:
                continue
        return alt(parts) if parts else None


def _simple_not(schema: Any) -> bool:
    """Whether ``not: schema`` is one of the forms `_Compiler._nots` compiles directly: a type, string values,
    one required name (or no keyword, or not a schema at all: an error there)."""
    if not isinstance(schema, dict):
        return True
    keys = set(schema) - _ANNOTATIONS
    if keys <= {"type"}:
        return True
    if keys <= {"enum", "const"}:
        enum = schema.get("enum", [])
        return isinstance(enum, list) and all(isinstance(v, str) for v in [*enum, schema.get("const", "")])
    required = schema.get("required")
    return (keys == {"required"} or keys == {"required", "type"} and schema["type"] == "object") and (
        isinstance(required, list) and len(required) == 1 and isinstance(required[0], str)
    )


# Keywords an enum value need not be checked against at the node that holds them: ``enum``/``const``/``type``
# are applied to the Flat itself, definitions constrain nothing, and every Flat flattened from ``allOf``,
# ``anyOf`` or ``$ref`` has the branch or target node among its own sources, which are checked one by one.
_CHECKED_ELSEWHERE = frozenset(
    {
        "enum",
        "const",
        "type",
        "$defs",
        "definitions",
        "allOf",
        "anyOf",
        "$ref",
        "$id",
        "id",
        "$schema",
        "$anchor",
    }
)


_NO_ENUM = Flat([])


def _join_enums(branches: list[Flat]) -> list[Flat]:
    """``branches`` (an ``anyOf``'s Flats) with those that are only an ``enum`` — no other keyword, no source
    that checks anything else — joined into one Flat of all their values: the same union, one Flat instead
    of one per value (an ``anyOf`` of 259 ``const``s merged with 259 other branches: 259 Flats, not 259²)."""
    plain = {
        id(f): f
        for f in branches
        if f.enum is not None
        and not any(_needs_validation(n.schema) for n in f.sources)
        and replace(f, sources=[], enum=None) == _NO_ENUM
    }
    if len(plain) < 2:
        return branches
    first = next(iter(plain.values()))
    joined = replace(first, enum=[v for f in plain.values() for v in f.enum])
    return [joined, *(f for f in branches if id(f) not in plain)]


def _pattern_verdict(value: Any, schema: Any) -> bool | None:
    """jsonschema's verdict on a node whose only keyword left to check is `pattern` (its own rule: a string
    must contain a match, per Python's `re.search`); None for any other node, or a pattern `re` rejects."""
    if not isinstance(schema, dict) or "pattern" not in schema:
        return None
    if any(k in _HANDLED and k not in _CHECKED_ELSEWHERE and k != "pattern" for k in schema):
        return None
    if not isinstance(value, str):
        return True
    try:
        return _python_regex(schema["pattern"]).search(value) is not None
    except (re.error, TypeError):
        return None


@lru_cache(maxsize=1024)
def _python_regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _needs_validation(schema: Any) -> bool:
    """Whether an enum value must be checked against this source node: it has a keyword that validates
    (unknown keywords are annotations: jsonschema ignores them too) beside those `_CHECKED_ELSEWHERE`."""
    if isinstance(schema, dict):
        return any(k in _HANDLED and k not in _CHECKED_ELSEWHERE for k in schema)
    return schema is not True


def _min_opt(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _int_lower(b: Bound) -> int:
    v = math.ceil(b.value)
    return v + 1 if b.exclusive and v == b.value else v


def _int_upper(b: Bound) -> int:
    v = math.floor(b.value)
    return v - 1 if b.exclusive and v == b.value else v


@lru_cache(maxsize=4096)
@lru_cache(maxsize=4096)
def _char_forms(c: str) -> str:
    """Every JSON-string form of the character ``c`` (raw, escapes), ready to concatenate."""
    return concat_atom(cps_json([(ord(c), ord(c))]) or "")


_RAW_ONLY_CHARS = frozenset(chr(cp) for lo, hi in RAW_ONLY for cp in range(lo, hi + 1))


@lru_cache(maxsize=4096)
def _raw_class_but(chars: tuple[str, ...]) -> str | None:
    """The class of the `RAW_ONLY` characters but ``chars`` ('' when none is left); None when one of
    ``chars`` is not `RAW_ONLY` (it has other forms than itself)."""
    if not _RAW_ONLY_CHARS.issuperset(chars):
        return None
    others = cps_subtract(RAW_ONLY, [(ord(c), ord(c)) for c in chars])
    return cps_class(others) if others else ""


@lru_cache(maxsize=4096)
def _other_char_forms(chars: tuple[str, ...]) -> str | None:
    """Every JSON-string form of any character but ``chars``, ready to concatenate (None: no character)."""
    other = cps_json(_complement_chars(list(chars)))
    return concat_atom(other) if other else None


def _complement_chars(chars: list[str]) -> list[tuple[int, int]]:
    out = []
    prev = 0
    for cp in sorted(ord(c) for c in chars):
        if cp > prev:
            out.append((prev, cp - 1))
        prev = cp + 1
    if prev <= MAX_CP:
        out.append((prev, MAX_CP))
    return out


_SIMPLE_REPEAT = re.compile(r"\^(\[(?:[^\]\\]|\\.)*\]|\\.|[^\\^$.|?*+()\[\]{}])(\*|\+|\{\d+(?:,\d*)?\})\$")


def _simple_repeat(pattern: str, ptr: str) -> tuple[str, int, int | None] | None:
    """``^X*$``-like pattern over one character set X: (X's regex, min, max)."""
    m = _SIMPLE_REPEAT.fullmatch(pattern)
    if not m:
        return None
    atom = anchored_pattern("^" + m.group(1) + "$", ptr)
    if atom is None or atom[1] != 1 or atom[2] != 1:
        return None
    q = m.group(2)
    if q == "*":
        return atom[0], 0, None
    if q == "+":
        return atom[0], 1, None
    a, comma, b = q[1:-1].partition(",")
    return atom[0], int(a), (int(b) if b else None) if comma else int(a)


def compile_json_schema(
    schema: dict | bool, options: JsonSchemaOptions = JsonSchemaOptions(), *, lazy: bool = False
) -> CompiledSchema:
    """Compile ``schema`` into a regex of its instances' JSON texts (see the module docstring).

    ``lazy``: property values that `grammars.deferral` admits (they cannot fail nor be empty) are compiled
    when the token automaton first reaches them, and the grammar is a `LazyGrammar`. Everything the walk may
    refuse is still found here: such sub-schemas are never deferred."""
    with deep_recursion(200 + FRAMES_PER_LEVEL * options.max_depth):
        return _compile(schema, options, lazy)


def _compile(schema: dict | bool, options: JsonSchemaOptions, lazy: bool) -> CompiledSchema:
    compiler = _Compiler(schema, options)
    if lazy:
        compiler._deferral = Deferral(compiler.registry, frozenset(_HANDLED))
    try:
        root = compiler.compile_nodes([Node(schema, "", ROOT_URI)])
    except Unsatisfiable:
        raise SchemaError("the schema admits no instance", "false", "") from None
    except RecursionError:  # the stack ran out before max_depth (a deep value in enum/const, a ref chain)
        depth, pointer = compiler.overflow or (0, "")
        raise SchemaError(
            f"the schema nests too deep to compile: Python's recursion limit of {sys.getrecursionlimit()} "
            f"stack frames ran out at depth {depth} (the limit max_depth={options.max_depth} counts "
            "sub-schemas compiled one inside another)",
            "$",
            pointer,
        ) from None
    except SchemaError:
        raise
    except (ValueError, ArithmeticError) as exc:  # NaN/inf from a non-JSON parser (json.loads reads them)
        raise SchemaError(f"not a finite JSON number: {exc}", "$", "") from None
    explain = tuple(ExplainEntry(p, tuple(sorted(k))) for p, k in sorted(compiler.explain.items()))
    root = compiler.budget(root, "")
    if compiler.pending:
        lazy_grammar = LazyGrammar(
            root,
            compiler.rules,
            compiler.recursive,
            options.stack_limit,
            compiler.open_content,
            compiler.productive,
            compiler.pending,
            compiler.write_pending,
        )
        return CompiledSchema(lazy_grammar, explain)
    grammar = RuleGrammar(
        root,
        tuple(compiler.rules),
        frozenset(compiler.recursive),
        options.stack_limit,
        frozenset(compiler.open_content),
        frozenset(compiler.productive),
    )
    return CompiledSchema(grammar, explain)
