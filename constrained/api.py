"""The Python API: compile a constraint once per tokenizer, then get a matcher per sequence.

    from constrained.api import Compiler

    compiler = Compiler.for_tokenizer(tokenizer)        # cached per tokenizer (and logits width)
    grammar = compiler.json_schema(MyPydanticModel)     # or a dict / bool / JSON text schema, or any type
    matcher = grammar.matcher()                         # one per sequence: accept_token, fill_bitmask, ...

Contract:
- `Compiler.for_tokenizer(tok, vocab_size=None)` returns the same `Compiler` for the same tokenizer object
  (and for any tokenizer with the same vocabulary); building the token table takes about a second once.
- `json_schema(schema)` accepts a JSON Schema (`dict` or `bool`), its JSON text, a pydantic model class or
  any type pydantic can describe (`list[int]`, a dataclass, a `TypedDict`, ...); unsupported keywords raise
  `grammars.SchemaError` naming the keyword and its JSON pointer; `regex(pattern)` compiles a regular
  expression (implicitly anchored); `json_object()` allows any JSON object; `grammar(text, syntax="lark"|
  "gbnf")` compiles a context-free grammar (`GrammarSyntaxError` names the rule it cannot enforce).
  Grammars are cached (LRU) and immutable: share one grammar across threads and sequences, one matcher per
  sequence.
- `load_tokenizer(spec)` reads a tokenizer without loading model weights: "smollm2"/"embedded" (the embedded
  model's tokenizer) or a local Hugging Face folder. Never touches the network.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from constrained.grammar import Grammar, GrammarCompiler, GrammarError
from constrained.tokenizer_info import TokenizerInfo
from grammars import CompiledSchema, GrammarSyntaxError, JsonSchemaOptions, SchemaError

__all__ = [
    "Compiler",
    "Grammar",
    "GrammarError",
    "GrammarSyntaxError",
    "JsonSchemaOptions",
    "SchemaError",
    "load_tokenizer",
    "schema_of",
]

EMBEDDED_TOKENIZER_NAMES = ("smollm2", "embedded")


def schema_of(spec: Any) -> Mapping[str, Any] | bool:
    """The JSON Schema of `spec`: a schema (dict/bool), its JSON text, a pydantic model or a type."""
    if isinstance(spec, bool | Mapping):
        return spec
    if isinstance(spec, str | bytes):
        try:
            return json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the schema is not valid JSON: {exc}") from None
    model_json_schema = getattr(spec, "model_json_schema", None)
    if isinstance(spec, type) and callable(model_json_schema):  # a pydantic BaseModel subclass
        return model_json_schema()
    try:
        from pydantic import TypeAdapter

        return TypeAdapter(spec).json_schema()
    except Exception as exc:
        raise TypeError(
            f"cannot derive a JSON schema from {spec!r}: pass a dict, a pydantic model or a type ({exc})"
        ) from None


class Compiler:
    """Compiles JSON schemas, regexes and grammars into `Grammar`s for one tokenizer (thread-safe, cached)."""

    _by_tokenizer: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    _by_fingerprint: dict[tuple[str, int], Compiler] = {}
    _lock = threading.Lock()

    def __init__(
        self,
        info: TokenizerInfo,
        *,
        cache_size: int = 256,
        max_states: int = 200_000,
        options: JsonSchemaOptions | None = None,
    ) -> None:
        self.info = info
        self.options = options or JsonSchemaOptions()
        self.grammar_compiler = GrammarCompiler(info, cache_size=cache_size, max_states=max_states)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, *, vocab_size: int | None = None) -> Compiler:
        """The shared compiler of a Hugging Face tokenizer (or a `load_tokenizer` spec such as "smollm2").

        `vocab_size` is the model's logits width when it exceeds the tokenizer's length
        (`model.config.vocab_size`); extra logits are never allowed.
        """
        if isinstance(tokenizer, str | os.PathLike):
            tokenizer = load_tokenizer(str(tokenizer))
        with cls._lock:
            try:
                per_tokenizer = cls._by_tokenizer.setdefault(tokenizer, {})
            except TypeError:  # not weak-referenceable: cache by vocabulary only
                per_tokenizer = {}
            compiler = per_tokenizer.get(vocab_size)
        if compiler is not None:
            return compiler
        info = TokenizerInfo.from_huggingface(tokenizer, vocab_size)
        with cls._lock:
            compiler = cls._by_fingerprint.setdefault((info.fingerprint, info.vocab_size), cls(info))
            per_tokenizer[vocab_size] = compiler
        return compiler

    def json_schema(self, schema: Any, *, options: JsonSchemaOptions | None = None) -> Grammar:
        """Grammar of the JSON texts of instances of `schema` (see `schema_of` for what `schema` may be)."""
        return self.grammar_compiler.compile_json_schema(schema_of(schema), options or self.options)

    def regex(self, pattern: str) -> Grammar:
        """Grammar of the texts fully matched by `pattern`."""
        return self.grammar_compiler.compile_regex(pattern)

    def json_object(self) -> Grammar:
        """Any JSON object (nesting bounded, as `response_format: json_object`)."""
        return self.grammar_compiler.compile_json_object()

    def grammar(self, text: str, *, syntax: str = "lark", start: str | None = None) -> Grammar:
        """Grammar of the texts a context-free grammar derives: `syntax="lark"` (from rule `start`, default
        "start") or `"gbnf"` (llama.cpp; from `start`, default "root"). Raises `GrammarSyntaxError` naming the
        rule or terminal it cannot enforce exactly."""
        if syntax == "lark":
            return self.grammar_compiler.compile_lark(text, start or "start")
        if syntax == "gbnf":
            return self.grammar_compiler.compile_gbnf(text, start or "root")
        raise ValueError(f"unknown grammar syntax {syntax!r} (expected 'lark' or 'gbnf')")

    def explain(self, schema: Any, *, options: JsonSchemaOptions | None = None) -> CompiledSchema:
        """The schema's regex and what is enforced per JSON pointer, without building a token automaton."""
        from grammars import compile_json_schema

        return compile_json_schema(schema_of(schema), options or self.options)


def load_tokenizer(spec: str):
    """A Hugging Face tokenizer from "smollm2"/"embedded" or a local folder, without loading weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer

    if spec in EMBEDDED_TOKENIZER_NAMES:
        from constrained.models import _gguf_cache_path, embedded_gguf_path

        gguf = embedded_gguf_path()
        cached = _gguf_cache_path(gguf)
        if (cached / "tokenizer.json").is_file() or (cached / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(cached)
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    path = Path(spec).expanduser()
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    if path.suffix == ".gguf" and path.is_file():
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    raise FileNotFoundError(
        f"unknown tokenizer {spec!r}: use 'smollm2' (the embedded model's), a model folder or a .gguf file"
    )
