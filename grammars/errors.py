"""Error type of the schema compiler.

Contract: every schema keyword that the compiler cannot enforce exactly raises :class:`SchemaError`
naming the keyword and the JSON pointer of the schema object that holds it.
"""

from __future__ import annotations


class SchemaError(ValueError):
    """A schema (or one keyword of it) that cannot be compiled exactly."""

    def __init__(self, message: str, keyword: str, pointer: str) -> None:
        self.message = message
        self.keyword = keyword
        self.pointer = pointer
        super().__init__(f"{message} (keyword '{keyword}' at '{pointer or '/'}')")


class InvalidSchemaError(ValueError):
    """A document that is not a valid JSON schema for its dialect (the meta-schema rejects it)."""

    def __init__(self, message: str, pointer: str) -> None:
        self.message = message
        self.pointer = pointer
        super().__init__(f"invalid JSON schema at '{pointer or '/'}': {message}")


class Unsatisfiable(Exception):
    """Internal: a subschema admits no instance (or none within the recursion limit)."""
