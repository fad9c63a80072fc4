"""Budget-aware closing: keep every constrained output completable before `max_tokens` runs out.

Contract: `ClosingPlan(dfa, info)` works on a grammar's byte automaton (`completion(state)`: the
lexicographically smallest among the shortest byte strings that complete the output). For a state it knows
that completion and `distance(state)`, the number of tokens of that string
under greedy longest-match tokenization: an upper bound on the tokens needed to finish, which drops by
exactly one along the greedy tokenization (suffixes of a smallest-shortest completion are smallest-shortest
completions of the states they lead to). The decode loop keeps `distance(state) <= budget`: a sampled token
whose next state breaks it is re-drawn among `closing_tokens(state, budget)` (prefix tokens of the
completion that keep the invariant; never empty while the invariant holds). Results are cached per state.
"""

from __future__ import annotations

import numpy as np

from constrained.tokenizer_info import TokenizerInfo

DEAD = -1
_TOKEN_TABLES: dict[str, tuple[dict[bytes, int], int]] = {}


def _token_table(info: TokenizerInfo) -> tuple[dict[bytes, int], int]:
    """bytes -> lowest token id of the tokens a constraint may allow, and the longest token length."""
    table = _TOKEN_TABLES.get(info.fingerprint)
    if table is None:
        lowest = {data: ids[0] for data, ids in info.tokens_by_bytes().items()}
        table = _TOKEN_TABLES[info.fingerprint] = (lowest, max(map(len, lowest)))
    return table


class ClosingPlan:
    def __init__(self, dfa, info: TokenizerInfo) -> None:
        self._dfa = dfa
        self._tokens, self._longest = _token_table(info)
        self._completions: dict[int, bytes] = {}
        self._distances: dict[int, int] = {}

    def completion(self, state: int) -> bytes:
        """Smallest of the shortest byte strings leading from `state` to an accepting state."""
        done = self._completions.get(state)
        if done is None:
            done = self._completions[state] = self._dfa.completion(state)
        return done

    def distance(self, state: int) -> int:
        """Tokens needed to finish from `state` along the greedy tokenization of its completion."""
        known = self._distances.get(state)
        if known is None:
            known = self._distances[state] = len(self._greedy(self.completion(state)))
        return known

    def closing_tokens(self, state: int, budget: int) -> np.ndarray:
        """Prefix tokens of `completion(state)` after which the rest still fits in `budget - 1` tokens."""
        text = self.completion(state)
        ids = []
        for size in range(1, min(len(text), self._longest) + 1):
            token_id = self._tokens.get(text[:size])
            if token_id is not None and len(self._greedy(text[size:])) <= budget - 1:
                ids.append(token_id)
        return np.asarray(ids, dtype=np.int64)

    def _greedy(self, text: bytes) -> list[int]:
        ids, at = [], 0
        while at < len(text):
            for size in range(min(self._longest, len(text) - at), 0, -1):
                token_id = self._tokens.get(text[at : at + size])
                if token_id is not None:
                    ids.append(token_id)
                    at += size
                    break
            else:
                raise ValueError(f"byte {text[at]:#x} has no token: cannot close the output")
        return ids
