"""outlines-core's `Index` as a `constrained.token_index.TokenIndex`: the reference oracle of the token-index
tests (`tests/test_token_index.py`). Not used in production.

The vocabulary is the tokens a constraint may allow (`TokenizerInfo.tokens_by_bytes`), with the lowest EOS id
as outlines-core's EOS; masks and allowed tokens leave every EOS id out (the `TokenIndex` contract). There is
no byte automaton (`dfa` is None): a `Grammar` over this index has no closing and no forced bytes.
"""

from __future__ import annotations

import numpy as np
from outlines_core import Index, Vocabulary

from constrained.bitmask import pack_token_ids
from constrained.tokenizer_info import TokenizerInfo

_VOCABULARIES: dict[str, Vocabulary] = {}


def outlines_vocabulary(info: TokenizerInfo) -> Vocabulary:
    """outlines-core vocabulary of the tokens a constraint may allow (cached per tokenizer)."""
    vocabulary = _VOCABULARIES.get(info.fingerprint)
    if vocabulary is None:
        vocabulary = _VOCABULARIES[info.fingerprint] = Vocabulary(
            min(info.eos_token_ids), info.tokens_by_bytes()
        )
    return vocabulary


class OutlinesReferenceIndex:
    """outlines-core's `Index` of `regex` over `info`'s tokens, built up front (satisfies `TokenIndex`)."""

    dfa = None  # no byte automaton

    def __init__(self, regex: str, info: TokenizerInfo) -> None:
        self.info = info
        self.index = Index(regex, outlines_vocabulary(info))
        self._eos = np.fromiter(sorted(info.eos_token_ids), dtype=np.int64)
        self._masks: dict[int, np.ndarray] = {}

    def get_initial_state(self) -> int:
        return self.index.get_initial_state()

    def is_final_state(self, state: int) -> bool:
        return self.index.is_final_state(state)

    def get_next_state(self, state: int, token_id: int) -> int | None:
        if token_id in self.info.eos_token_ids:
            return None
        return self.index.get_next_state(state, token_id)

    def get_allowed_tokens(self, state: int) -> list[int]:
        """Sorted ids of the allowed tokens, EOS excluded."""
        allowed = np.asarray(self.index.get_allowed_tokens(state) or [], dtype=np.int64)
        return sorted(allowed[~np.isin(allowed, self._eos)].tolist())

    def budget_used(self) -> float:
        return 0.0  # built up front

    def allowed_mask(self, state: int) -> np.ndarray:
        mask = self._masks.get(state)
        if mask is None:
            mask = self._masks[state] = pack_token_ids(self.get_allowed_tokens(state), self.info.vocab_size)
            mask.flags.writeable = False
        return mask
