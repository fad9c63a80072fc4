"""Meta-schema validation (before compiling), with jsonschema-rs.

Contract: :func:`check_schema` raises :class:`InvalidSchemaError` (message, JSON pointer) unless the schema
is valid under its dialect's meta-schema (chosen by ``$schema``: drafts 04 (03 too), 06, 07, 2019-09,
2020-12; 2020-12 when absent or unknown) and nests at most ``max_depth`` JSON containers deep (checked
first, without recursion: the Rust validator recurses on its native stack and would crash the process).
Formats in the meta-schema are checked; a ``regex`` passes when ECMA-262 or Python ``re`` accepts it.
jsonschema-rs's bundled draft-04 meta-schema lets duplicate ``enum`` values pass (harmless to the compiler).
Nothing is ever fetched.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jsonschema_rs

from .errors import InvalidSchemaError
from .refs import dialect_of, escape_token

MAX_DEPTH = 256  # JSON containers; the deepest real-world schema in MaskBench nests 63

_META_SCHEMAS = {
    4: ("http://json-schema.org/draft-04/schema#", jsonschema_rs.Draft4Validator),
    6: ("http://json-schema.org/draft-06/schema#", jsonschema_rs.Draft6Validator),
    7: ("http://json-schema.org/draft-07/schema#", jsonschema_rs.Draft7Validator),
    2019: ("https://json-schema.org/draft/2019-09/schema", jsonschema_rs.Draft201909Validator),
    2020: ("https://json-schema.org/draft/2020-12/schema", jsonschema_rs.Draft202012Validator),
}


_ECMA_REGEX = jsonschema_rs.Draft202012Validator({"format": "regex"}, validate_formats=True, offline=True)


def _is_regex(pattern: str) -> bool:
    """ECMA-262 (the specification's dialect) or Python `re` (lenient, as JavaScript without the `u` flag:
    a lone `]` or `}` is a literal); whether the compiler can enforce it is the compiler's decision."""
    if _ECMA_REGEX.is_valid(pattern):
        return True
    try:
        re.compile(pattern)
    except Exception:  # re.error, RecursionError (deep groups), OverflowError (huge repeats)
        return False
    return True


@cache
def _meta_validator(draft: int) -> Any:
    """A validator whose instances are schemas of `draft` (its meta-schema, bundled in jsonschema-rs)."""
    uri, cls = _META_SCHEMAS[draft]
    return cls({"$ref": uri}, validate_formats=True, offline=True, formats={"regex": _is_regex})


def too_deep(value: Any, max_depth: int) -> list[str] | None:
    """Path (keys) to the first container nested deeper than `max_depth`, or None; iterative."""
    stack: list[tuple[Any, int, tuple | None]] = [(value, 1, None)]  # path as (key, parent) cons cells
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            children = reversed(item.items())  # reversed: popped in document order
        elif isinstance(item, list):
            children = ((i, item[i]) for i in range(len(item) - 1, -1, -1))
        else:
            continue
        if depth > max_depth:
            keys = []
            while path is not None:
                keys.append(path[0])
                path = path[1]
            return keys[::-1]
        stack.extend((child, depth + 1, (str(key), path)) for key, child in children if _is_container(child))
    return None


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list)


def pointer(tokens: list[Any]) -> str:
    """JSON pointer of a path of keys and indices."""
    return "".join("/" + escape_token(str(token)) for token in tokens)


def check_schema(schema: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise `InvalidSchemaError` (message, JSON pointer) unless `schema` is valid under its dialect's
    meta-schema (`$schema`, default 2020-12) and nests at most `max_depth` JSON containers deep."""
    path = too_deep(schema, max_depth)
    if path is not None:
        message = f"the schema nests deeper than the limit of {max_depth} levels"
        raise InvalidSchemaError(message, pointer(path))
    draft = dialect_of(schema)
    try:
        _meta_validator(draft).validate(schema)
    except jsonschema_rs.ValidationError as exc:
        raise InvalidSchemaError(exc.message, pointer(list(exc.instance_path))) from None
    except ValueError as exc:  # a lone surrogate (JSON's "\ud800" is no Unicode text), a non-string key
        where = pointer(unreadable(schema) or []).encode("utf-8", "backslashreplace").decode("utf-8")
        raise InvalidSchemaError(f"the schema is not Unicode JSON text: {exc}", where) from None


def unreadable(value: Any) -> list[str] | None:
    """Path to the first key or string that is no UTF-8 text (a lone surrogate) or a non-string key."""
    stack: list[tuple[Any, list[str]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and not _is_text(item):
            return path
        entries = (
            item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        )
        for key, child in reversed(list(entries)):
            if isinstance(item, dict) and not (isinstance(key, str) and _is_text(key)):
                return [*path, str(key)]
            stack.append((child, [*path, str(key)]))
    return None


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
