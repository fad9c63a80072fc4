"""JSON Schema -> regex compilation for constrained generation.

Public API: :func:`compile_json_schema`, :class:`JsonSchemaOptions`, :class:`CompiledSchema`,
:class:`ExplainEntry`, :class:`SchemaError`. See ``SUPPORTED.md`` for the keyword coverage.
"""

from .errors import SchemaError
from .json_schema import CompiledSchema, ExplainEntry, JsonSchemaOptions, compile_json_schema

__all__ = ["CompiledSchema", "ExplainEntry", "JsonSchemaOptions", "SchemaError", "compile_json_schema"]
