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

    def __reduce__(self):  # picklable across processes (constrained.compile_pool)
        return type(self), (self.message, self.keyword, self.pointer)


class InvalidSchemaError(ValueError):
    """A document that is not a valid JSON schema for its dialect (the meta-schema rejects it)."""

    def __init__(self, message: str, pointer: str) -> None:
        self.message = message
        self.pointer = pointer
        super().__init__(f"invalid JSON schema at '{pointer or '/'}': {message}")

    def __reduce__(self):
        return type(self), (self.message, self.pointer)


class Unsatisfiable(Exception):
    """Internal: a subschema admits no instance (or none within the recursion limit)."""


class GrammarSyntaxError(ValueError):
    """A grammar text (Lark or GBNF) that is malformed, or uses a construct that cannot be enforced exactly.

    ``construct`` names what is wrong ("syntax", "left recursion", "lookaround", "flag 'a'", ...); ``where``
    names the rule or terminal at fault (``"rule 'expr'"``), or is None when the whole text is.
    """

    def __init__(self, message: str, construct: str, where: str | None = None) -> None:
        self.message = message
        self.construct = construct
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):  # picklable across processes, as SchemaError
        return type(self), (self.message, self.construct, self.where)
