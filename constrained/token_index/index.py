"""`LazyTokenIndex`: the token-level automaton of a grammar's language, computed per state on first visit."""

from __future__ import annotations

import numpy as np

from constrained.gc_pause import gc_paused
from constrained.token_index._walk import walk_trie
from constrained.token_index.automaton import DEAD, MAX_TERMS, LazyDFA
from constrained.token_index.vocabulary import TokenVocabulary
from grammars.ir import LazyGrammar, RuleGrammar


class LazyTokenIndex:
    """Token-level automaton of `grammar` (a regex, a `RuleGrammar` or a `LazyGrammar`) over `vocab`, built
    lazily and shared by every sequence.

    A token is allowed in state `s` iff feeding its bytes keeps the DFA alive (the bytes are a prefix of some
    word of the language). Where the regex has no prefix-overlapping alternatives this equals outlines-core's
    `Index` bit for bit (tested); elsewhere outlines-core drops words of the language and we do not. Masks
    never include EOS: the caller adds it in final states.
    Thread-safe: lazy construction is serialised by a lock; cached masks are read without it.
    """

    def __init__(
        self, grammar: str | RuleGrammar | LazyGrammar, vocab: TokenVocabulary, *, max_states: int = 200_000
    ) -> None:
        self.vocab = vocab
        self.dfa = LazyDFA(grammar, max_states=max_states)
        self._masks: dict[int, np.ndarray] = {}

    def get_initial_state(self) -> int:
        return self.dfa.initial

    def is_final_state(self, state: int) -> bool:
        return self.dfa.is_final(state)

    def get_next_state(self, state: int, token_id: int) -> int | None:
        if state < 0 or not 0 <= token_id < self.vocab.vocab_size:
            return None
        data = self.vocab.token_bytes[token_id]
        if data is None:
            return None
        dfa = self.dfa
        rows = dfa.rows
        cur = state
        for b in data:
            row = rows[cur]
            if row is None:
                row = dfa.row(cur)
            cur = row[b]
            if cur == DEAD:
                return None
        return cur

    def allowed_mask(self, state: int) -> np.ndarray:
        """Packed int32 bitmask (bit j of word w = token 32w+j) of the allowed tokens; cached, read-only."""
        mask = self._masks.get(state)
        if mask is None:
            with self.dfa.lock, gc_paused():  # a first visit allocates many small objects: no GC passes
                mask = self._masks.get(state)
                if mask is None:
                    same = self.dfa.mask_state(state, self.vocab.max_token_len) if state >= 0 else state
                    mask = self._masks.get(same)
                    if mask is None:
                        mask = self._masks[same] = self._compute_mask(same)
                    self._masks[state] = mask
        return mask

    def get_allowed_tokens(self, state: int) -> np.ndarray:
        """Sorted ids of the allowed tokens (for parity checks and debugging)."""
        bits = np.unpackbits(self.allowed_mask(state).view(np.uint8), bitorder="little")
        return np.flatnonzero(bits[: self.vocab.vocab_size])

    @property
    def num_states(self) -> int:
        return self.dfa.num_states

    def budget_used(self) -> float:
        """The larger of the states and the interned terms built, each over its budget."""
        return max(self.dfa.num_states / self.dfa.max_states, len(self.dfa.store.kind) / MAX_TERMS)

    def _compute_mask(self, state: int) -> np.ndarray:
        vocab = self.vocab
        trie = vocab.trie
        words = np.zeros(vocab.num_words, dtype=np.uint32)
        run = self.dfa.content_run(state, vocab.max_token_len) if state >= 0 else None
        if run is not None:
            words |= vocab.content_upto[run]
            trie = vocab.rest
        if state >= 0:
            dfa = self.dfa
            stack_node, stack_state, pend_node, pend_state = vocab.scratch()
            stack_node[0] = 0
            stack_state[0] = state
            nstack = 1
            while nstack:
                npend = walk_trie(
                    trie.child_ptr,
                    trie.child_byte,
                    trie.child_node,
                    trie.tok_ptr,
                    trie.tok_ids,
                    dfa.trans,
                    dfa.known,
                    dfa.final,
                    stack_node,
                    stack_state,
                    nstack,
                    words,
                    pend_node,
                    pend_state,
                )
                if npend:
                    dfa.expand_many(np.unique(pend_state[:npend]).tolist())
                    stack_node[:npend] = pend_node[:npend]
                    stack_state[:npend] = pend_state[:npend]
                nstack = npend
        mask = words.view(np.int32)
        mask.flags.writeable = False
        return mask
