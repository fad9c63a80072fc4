"""Schema documents, dialects and ``$ref`` resolution.

Contract: :class:`Registry` indexes the root schema and the caller-supplied ``remotes`` (never fetched)
by URI, ``$id``/``id`` (draft-04) and ``$anchor`` (plus draft-06/07 ``$id: "#name"`` anchors), and resolves
a ``$ref`` against a base URI into a :class:`Node` (schema, JSON pointer, base URI). Fragments are JSON
pointers (percent-decoded, ``~1``/``~0`` unescaped) or anchor names. Unresolvable references raise
``SchemaError`` with keyword ``$ref``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

from .errors import SchemaError

ROOT_URI = "urn:constrained:root"

_SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LIST_KEYWORDS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SCHEMA_KEYWORDS = (
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
    "items",
)


def dialect_of(schema: Any) -> int:
    """Draft number from ``$schema``: 4, 6, 7, 2019 or 2020 (default)."""
    uri = schema.get("$schema", "") if isinstance(schema, dict) else ""
    if not isinstance(uri, str):
        return 2020
    for marker, draft in (
        ("draft-04", 4),
        ("draft-03", 4),
        ("draft-06", 6),
        ("draft-07", 7),
        ("2019-09", 2019),
    ):
        if marker in uri:
            return draft
    return 2020


@dataclass(frozen=True)
class Node:
    """One schema object in context: the pointer names it in error messages."""

    schema: Any
    pointer: str
    base: str


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _id_of(schema: dict, draft: int) -> str | None:
    """The schema's ``$id`` (``id`` in draft 04). In drafts 04-07 every keyword beside ``$ref`` is ignored,
    so is such an ``$id`` (a plain-name ``#anchor`` one still names the schema, as in ``referencing``)."""
    key = "id" if draft == 4 else "$id"
    value = schema.get(key)
    if not isinstance(value, str):
        return None
    if draft <= 7 and "$ref" in schema and not value.startswith("#"):
        return None
    return value


def _children(schema: dict, base: str, pointer: str) -> Iterator[tuple[Any, str, str]]:
    """(sub-schema, base, pointer) of each sub-schema of ``schema``, in document-keyword order."""
    for key in _SCHEMA_MAP_KEYWORDS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, value in sub.items():
                yield value, base, f"{pointer}/{key}/{escape_token(name)}"
    for key in _SCHEMA_LIST_KEYWORDS:
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, value in enumerate(sub):
                yield value, base, f"{pointer}/{key}/{i}"
    for key in _SCHEMA_KEYWORDS:
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, value in enumerate(sub):
                yield value, base, f"{pointer}/{key}/{i}"
        elif key in schema:
            yield sub, base, f"{pointer}/{key}"


class Registry:
    def __init__(self, root: Any, remotes: Mapping[str, Any], draft: int) -> None:
        self.draft = draft
        self.docs: dict[str, tuple[Any, str]] = {}  # uri (no fragment) -> (schema, pointer prefix)
        self.anchors: dict[str, tuple[Any, str]] = {}  # uri#anchor -> (schema, pointer)
        for uri, doc in remotes.items():
            self._index(doc, urldefrag(uri)[0], f"{uri}#")
        self.root_base = ROOT_URI
        if isinstance(root, dict) and _id_of(root, draft) and not _id_of(root, draft).startswith("#"):
            self.root_base = urldefrag(urljoin(ROOT_URI, _id_of(root, draft)))[0]
        self._index(root, ROOT_URI, "")

    def _index(self, schema: Any, base: str, pointer: str) -> None:
        if not isinstance(schema, dict):
            if isinstance(schema, list):
                return
            self.docs.setdefault(base, (schema, pointer))
            return
        self.docs.setdefault(base, (schema, pointer))
        self._walk(schema, base, pointer)

    def _walk(self, schema: Any, base: str, pointer: str) -> None:
        """Index the ``$id``s and anchors of ``schema`` and its sub-schemas: pre-order, iterative (a schema
        nested thousands deep is indexed, not a ``RecursionError``)."""
        stack = [(schema, base, pointer)]
        while stack:
            node, base, pointer = stack.pop()
            if isinstance(node, dict):
                base = self._register(node, base, pointer)
                stack.extend(reversed(list(_children(node, base, pointer))))

    def _register(self, schema: dict, base: str, pointer: str) -> str:
        """Index the schema's own ``$id``/anchor; returns the base URI in effect inside it."""
        sid = _id_of(schema, self.draft)
        if sid is not None:
            if sid.startswith("#") and self.draft <= 7:
                self.anchors[f"{base}{sid}"] = (schema, pointer)
            else:
                new, frag = urldefrag(urljoin(base, sid))
                if new:
                    base = new
                    self.docs[base] = (schema, pointer)
                if frag:
                    self.anchors[f"{base}#{frag}"] = (schema, pointer)
        anchor = schema.get("$anchor")
        if isinstance(anchor, str):
            self.anchors[f"{base}#{anchor}"] = (schema, pointer)
        return base

    def base_of(self, node: Node) -> str:
        """Base URI in effect inside ``node`` (its own ``$id`` applied)."""
        if isinstance(node.schema, dict):
            sid = _id_of(node.schema, self.draft)
            if sid is not None and not sid.startswith("#"):
                return urldefrag(urljoin(node.base, sid))[0]
        return node.base

    def resolve(self, ref: str, base: str, pointer: str) -> Node:
        if not isinstance(ref, str):
            raise SchemaError("$ref must be a string", "$ref", pointer)
        uri, frag = urldefrag(urljoin(base, ref))
        if not uri:
            uri = base
        if uri not in self.docs:
            raise SchemaError(
                f"unresolvable reference {ref!r} (register it in options.remotes)", "$ref", pointer
            )
        doc, prefix = self.docs[uri]
        if not frag:
            return Node(doc, prefix, uri)
        if not frag.startswith("/"):
            key = f"{uri}#{frag}"
            if key not in self.anchors:
                raise SchemaError(f"unknown anchor {ref!r}", "$ref", pointer)
            target, tptr = self.anchors[key]
            return Node(target, tptr, uri)
        target = doc
        tptr = prefix
        for raw in frag[1:].split("/"):
            if isinstance(target, dict) and target is not doc:
                sid = _id_of(target, self.draft)
                if sid is not None and not sid.startswith("#"):
                    uri = urldefrag(urljoin(uri, sid))[0]
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise SchemaError(f"unresolvable reference {ref!r}", "$ref", pointer)
            tptr += "/" + escape_token(token)
        return Node(target, tptr, uri)
