"""Compiled grammars and per-sequence matchers: the one interface the decode loop uses.

Contract (modelled on vLLM v1 structured output / xgrammar):
- `GrammarCompiler(tokenizer_info)` compiles a constraint (`json_schema`, `regex`, a Lark or GBNF grammar)
  into a `Grammar`, caching results by (kind, canonical source, options) in a bounded LRU shared by all
  requests.
- A `Grammar` is immutable and thread-safe to share; it owns a token index (a
  `constrained.token_index.TokenIndex`: automaton state -> allowed tokens, next state; `GrammarCompiler`
  builds a `LazyTokenIndex`) and a per-state bitmask cache filled lazily on first visit. Whatever does not
  depend on the index (EOS in accepting states, budget closing, forced bytes, matchers) lives here.
- `Grammar.matcher()` gives a `Matcher` per sequence: `accept_token(s)`, `fill_bitmask`, `rollback`,
  `is_terminated` (an end-of-sequence token was accepted) and `can_terminate` (the text so far is complete).
  The end-of-sequence token is allowed exactly in accepting states; special tokens are never allowed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from constrained.bitmask import pack_token_ids, write_row
from constrained.closing import ClosingPlan
from constrained.disk_cache import DiskCache
from constrained.gc_pause import gc_paused
from constrained.token_index import LazyTokenIndex, TokenIndex, TokenVocabulary
from constrained.token_index.protocol import DEAD
from constrained.tokenizer_info import TokenizerInfo
from grammars import CompiledSchema, JsonSchemaOptions, SchemaError, compile_json_schema
from grammars.ir import LazyGrammar, RuleGrammar, complete
from grammars.metaschema import MAX_DEPTH, pointer, too_deep

GRAMMAR_SYNTAXES = ("lark", "gbnf")
# A cached grammar whose automaton has built more than this fraction of its size budget (states, terms) is
# compiled afresh for the next request: the budget bounds what one request builds, not a schema's lifetime.
WORN = 0.5


def compile_lazily(schema: Any, options: JsonSchemaOptions) -> CompiledSchema:
    """`compile_json_schema` leaving the sub-schemas that cannot fail for the automaton to compile when it
    first reaches them: the first mask costs what the first token needs, not the whole schema."""
    return compile_json_schema(schema, options, lazy=True)


class GrammarError(ValueError):
    """A constraint that cannot be compiled (bad regex, automaton too large, ...)."""


@dataclass
class Grammar:
    """An automaton over tokens; shared by every sequence that uses the same constraint."""

    index: TokenIndex
    info: TokenizerInfo
    rule_grammar: RuleGrammar | LazyGrammar  # lazy: sub-schemas compiled as the automaton reaches them
    compile_seconds: float
    explain: tuple = ()  # `grammars.CompiledSchema.explain` (of the sub-schemas compiled so far, when lazy)
    _masks: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _forced: dict[int, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.initial_state: int = self.index.get_initial_state()
        self.eos_ids = np.fromiter(sorted(self.info.eos_token_ids), dtype=np.int64)
        self.eos_mask = pack_token_ids(self.eos_ids, self.info.vocab_size)  # packed once, reused per step

    @property
    def source(self) -> RuleGrammar:
        """The complete rule grammar (a lazy one's remaining sub-schemas compiled now)."""
        return complete(self.rule_grammar)

    def matcher(self) -> Matcher:
        return Matcher(self)

    def is_final(self, state: int) -> bool:
        return self.index.is_final_state(state)

    def next_state(self, state: int, token_id: int) -> int | None:
        return self.index.get_next_state(state, token_id)

    @cached_property
    def closing(self) -> ClosingPlan | None:
        """Budget-aware closing over the byte automaton; None for an index without one (`TokenIndex.dfa`)."""
        dfa = self.index.dfa
        return ClosingPlan(dfa, self.info) if dfa is not None else None

    def min_tokens(self) -> int:
        """Tokens of the shortest complete output (greedy tokenization; 0 when unknown)."""
        return self.closing.distance(self.initial_state) if self.closing is not None else 0

    def forced_bytes(self, state: int, limit: int = 256) -> bytes:
        """The bytes every continuation from `state` starts with, up to `limit` (XGrammar's jump-forward
        string): empty where the output may end or more than one byte may come next. Cached per state."""
        forced = self._forced.get(state)
        if forced is None:
            dfa = self.index.dfa
            out = bytearray()
            current = state
            while dfa is not None and current >= 0 and not dfa.is_final(current) and len(out) < limit:
                row = dfa.row(current)
                if len(row) - row.count(DEAD) != 1:  # a choice of bytes (or none: never for a live state)
                    break
                byte = next(b for b, nxt in enumerate(row) if nxt != DEAD)
                out.append(byte)
                current = row[byte]
            forced = self._forced[state] = bytes(out)
        return forced

    def state_mask(self, state: int) -> np.ndarray:
        """Packed int32 bitmask of the tokens allowed in `state` (EOS included when `state` accepts)."""
        mask = self._masks.get(state)
        if mask is None:
            mask = self.index.allowed_mask(state)  # EOS excluded; cached (read-only) by the index itself
            if not self.is_final(state):
                return mask
            mask = self._masks[state] = mask | self.eos_mask
        return mask


class Matcher:
    """Tracks one sequence through a `Grammar`."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self._states = [grammar.initial_state]
        self._terminated = False

    @property
    def state(self) -> int:
        return self._states[-1]

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; returns False (and changes nothing) when the token is not allowed."""
        if self._terminated:
            return False
        if token_id in self.grammar.info.eos_token_ids:
            if not self.grammar.is_final(self.state):
                return False
            self._terminated = True
            self._states.append(self.state)
            return True
        nxt = self.grammar.next_state(self.state, token_id)
        if nxt is None:
            return False
        self._states.append(nxt)
        return True

    def accept_tokens(self, token_ids: Iterable[int]) -> bool:
        """Accept tokens in order; on the first refusal, roll back what this call accepted."""
        accepted = 0
        for token_id in token_ids:
            if not self.accept_token(token_id):
                self.rollback(accepted)
                return False
            accepted += 1
        return True

    def rollback(self, num_tokens: int) -> None:
        if num_tokens > len(self._states) - 1:
            raise ValueError(f"cannot roll back {num_tokens} tokens, only {len(self._states) - 1} accepted")
        if num_tokens:
            if self._terminated:
                self._terminated = False
            del self._states[-num_tokens:]

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write this sequence's allowed tokens into `bitmask[row]` (only EOS once terminated)."""
        mask = self.grammar.eos_mask if self._terminated else self.grammar.state_mask(self.state)
        write_row(bitmask, row, mask)

    def forced_bytes(self) -> bytes:
        """The bytes the output must continue with from here (empty when there is a choice or it may end)."""
        return b"" if self._terminated else self.grammar.forced_bytes(self.state)

    def is_terminated(self) -> bool:
        return self._terminated

    def can_terminate(self) -> bool:
        return self.grammar.is_final(self.state)


def _schema_key(schema: Any) -> str:
    """The schema's JSON text (cache key); `SchemaError` when it has none (too deep, cyclic, not JSON)."""
    try:
        return json.dumps(schema)
    except RecursionError:
        path = too_deep(schema, MAX_DEPTH) or []
        raise SchemaError(
            f"the schema nests deeper than the limit of {MAX_DEPTH} JSON containers", "$", pointer(path)
        ) from None
    except (TypeError, ValueError) as exc:  # a non-JSON value; a Python-level cycle
        raise SchemaError(f"the schema is not JSON: {exc}", "$", "") from None


class GrammarCompiler:
    """Compiles constraints for one tokenizer, with a bounded LRU cache shared by all requests.

    Each constraint gets a `constrained.token_index.LazyTokenIndex` (masks computed per state on first
    visit; at most `max_states` automaton states, else `GrammarError`). Another `TokenIndex` (a test
    oracle) plugs in as `Grammar(index, info, rule_grammar, compile_seconds)`.
    `compile_schema` turns a schema into its grammar (`compile_lazily` in this process by default: the
    sub-schemas that cannot fail wait until decoding reaches them; the server passes
    `constrained.compile_pool.IsolatedCompiler`, which walks the whole schema in a worker process); with a
    `disk_cache` (`constrained.disk_cache.DiskCache`) a schema compiled once, by any process, is not walked
    again (a lazy grammar is stored complete).
    """

    def __init__(
        self,
        info: TokenizerInfo,
        *,
        cache_size: int = 256,
        max_states: int = 200_000,
        compile_schema: Callable[[Any, JsonSchemaOptions], CompiledSchema] | None = None,
        disk_cache: DiskCache | None = None,
    ) -> None:
        self.compile_schema = compile_schema or compile_lazily
        self.disk_cache = disk_cache
        self.info = info
        self.max_states = max_states  # automaton size budget: exceeding it fails the request
        self._token_vocabulary = TokenVocabulary.from_info(info)
        self._cache: OrderedDict[tuple, Grammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.on_compiled: Callable[[float], None] | None = None  # observer of compile seconds (metrics)

    def compile_json_schema(
        self, schema: Mapping[str, Any] | bool, options: JsonSchemaOptions | None = None
    ) -> Grammar:
        """Compile a JSON schema; raises `grammars.SchemaError` naming the unsupported keyword."""
        options = options or JsonSchemaOptions()
        # Key order is kept: `properties` order is the output order, so reordered schemas are different.
        key = ("json_schema", _schema_key(schema), repr(options))
        return self._cached(key, lambda: self._walk(schema, options, "\0".join(key)))

    def _walk(self, schema: Mapping[str, Any] | bool, options: JsonSchemaOptions, key: str) -> CompiledSchema:
        """The schema's rule grammar: from the disk cache when there is one, else compiled (and stored)."""
        if self.disk_cache is None:
            return self.compile_schema(schema, options)
        compiled = self.disk_cache.get(key)
        if compiled is None:
            compiled = self.compile_schema(schema, options)
            self.disk_cache.put(key, compiled)
        return compiled

    def compile_json_object(self) -> Grammar:
        """Any JSON object (`response_format: json_object`), nested to the stack limit."""
        return self.compile_json_schema({"type": "object"})

    def compile_regex(self, regex: str) -> Grammar:
        return self.compile_grammar(RuleGrammar.of_regex(regex))

    def compile_grammar(self, grammar: RuleGrammar) -> Grammar:
        """A rule grammar built by the caller (tool calls, composed constraints)."""
        return self._cached(("grammar", grammar), lambda: CompiledSchema(grammar, explain=()))

    def compile_lark(self, text: str, start: str = "start") -> Grammar:
        """A Lark grammar (vLLM's `structured_outputs.grammar`); `grammars.GrammarSyntaxError` names the rule
        or terminal it cannot enforce exactly."""
        from grammars.lark_grammar import translate_lark

        return self._cached(("lark", text, start), lambda: translate_lark(text, start))

    def compile_gbnf(self, text: str, root: str = "root") -> Grammar:
        """A GBNF grammar (llama.cpp's `grammar`); errors as `compile_lark`."""
        from grammars.gbnf import translate_gbnf

        return self._cached(("gbnf", text, root), lambda: translate_gbnf(text, root))

    def compile_text_grammar(self, text: str, syntax: str = "lark") -> Grammar:
        """`compile_lark` or `compile_gbnf` by `syntax` ("lark" | "gbnf"); ValueError for another."""
        if syntax not in GRAMMAR_SYNTAXES:
            raise ValueError(f"unknown grammar syntax {syntax!r} (expected 'lark' or 'gbnf')")
        return self.compile_lark(text) if syntax == "lark" else self.compile_gbnf(text)

    def _cached(self, key: tuple, build) -> Grammar:
        with self._lock:
            grammar = self._cache.get(key)
            if grammar is not None and grammar.index.budget_used() > WORN:
                del self._cache[key]  # sequences using it keep it; new ones get a fresh automaton
                grammar = None
            if grammar is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return grammar
        start = time.perf_counter()
        with gc_paused():
            compiled = build()
            try:
                index = LazyTokenIndex(compiled.grammar, self._token_vocabulary, max_states=self.max_states)
            except Exception as exc:  # `RegexUnsupported` (syntax, size) and whatever else the build raises
                raise GrammarError(f"cannot build a token automaton: {exc}") from exc
        grammar = Grammar(index, self.info, compiled.grammar, time.perf_counter() - start, compiled.explain)
        if self.on_compiled is not None:
            self.on_compiled(grammar.compile_seconds)
        with self._lock:
            self.misses += 1
            self._cache[key] = grammar
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return grammar
