"""JSON Schema -> regex compilation for constrained generation.

Public API: :func:`compile_json_schema`, :class:`JsonSchemaOptions`, :class:`CompiledSchema`,
:class:`ExplainEntry`, :class:`SchemaError`, :func:`check_schema` / :class:`InvalidSchemaError` (meta-schema
validation with jsonschema-rs, before compiling). See ``SUPPORTED.md`` for the keyword coverage. Context-free
grammars: ``grammars.lark_grammar.compile_lark`` and ``grammars.gbnf.compile_gbnf`` (errors:
:class:`GrammarSyntaxError`).
"""

from .errors import GrammarSyntaxError, InvalidSchemaError, SchemaError
from .json_schema import CompiledSchema, ExplainEntry, JsonSchemaOptions, compile_json_schema
from .metaschema import check_schema

__all__ = [
    "CompiledSchema",
    "ExplainEntry",
    "GrammarSyntaxError",
    "InvalidSchemaError",
    "JsonSchemaOptions",
    "SchemaError",
    "check_schema",
    "compile_json_schema",
]
