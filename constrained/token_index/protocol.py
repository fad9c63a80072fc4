"""The interface a token index offers the decode path (`constrained.grammar.Grammar`).

Modelled on vLLM's `StructuredOutputBackend` / `StructuredOutputGrammar`: a backend plugs in by building an
object that satisfies `TokenIndex` for a constraint; `Grammar` adds what is common to every backend (EOS in
accepting states, the per-state mask cache, budget closing, forced bytes, per-sequence matchers).
`constrained.token_index.LazyTokenIndex` is the production implementation; tests wrap outlines-core's
`Index` in the same protocol as a reference oracle (`tests/outlines_reference.py`).

Contract:
- States are ints; `get_initial_state()` is where every sequence starts. A state reached through
  `get_next_state` is never negative (the dead state, -1, is reported as None instead).
- `get_next_state(state, token_id)`: the state after `token_id`, or None when the token is not allowed there
  (also for EOS, special tokens and ids outside the vocabulary: EOS is the caller's business).
- `is_final_state(state)`: the text so far is a complete word of the language (EOS may come next).
- `allowed_mask(state)`: packed int32 bitmask, ceil(vocab_size / 32) words, bit j of word w = token
  32w+j, of the tokens `get_next_state` accepts in `state`. EOS is never included. The array may be cached
  and shared by the index: callers must not write to it.
- `dfa`: the byte automaton the token states are states of (`ByteAutomaton`), or None for an index without
  one. With it, the token transition is the byte walk over the token's bytes (`get_next_state(s, t)` ==
  walking `dfa.row` through `t`'s bytes from `s`), and `Grammar` offers budget-aware closing and forced
  bytes; without it, `Grammar.closing` is None (no closing) and `Grammar.forced_bytes` is empty.
- `budget_used()`: the fraction (0..1) of its size budget the index has built so far (an index built up
  front: 0). Past the budget, building more raises; a cache replaces a worn index for new sequences.
- Thread safety: one index is shared by every sequence of its constraint, across threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

DEAD = -1  # the byte automaton's dead state


@runtime_checkable
class ByteAutomaton(Protocol):
    """A deterministic automaton over bytes whose every live state can reach an accepting one."""

    def is_final(self, state: int) -> bool:
        """Whether `state` accepts (False for `DEAD`)."""
        ...

    def row(self, state: int) -> Sequence[int]:
        """The 256 successors of live `state`, indexed by byte (`DEAD` where the byte is not allowed)."""
        ...

    def completion(self, state: int) -> bytes:
        """The lexicographically smallest of the shortest byte strings from live `state` to an accepting
        state (used by `constrained.closing.ClosingPlan`)."""
        ...


@runtime_checkable
class TokenIndex(Protocol):
    """Automaton over token ids for one constraint and one tokenizer (see the module docstring)."""

    def get_initial_state(self) -> int: ...

    def is_final_state(self, state: int) -> bool: ...

    def get_next_state(self, state: int, token_id: int) -> int | None: ...

    def allowed_mask(self, state: int) -> np.ndarray:
        """Packed int32 bitmask of the allowed tokens, EOS excluded; read-only."""
        ...

    def budget_used(self) -> float:
        """The fraction of the index's size budget built so far."""
        ...

    @property
    def dfa(self) -> ByteAutomaton | None:
        """The byte automaton behind the token states, or None (no closing, no forced bytes)."""
        ...
