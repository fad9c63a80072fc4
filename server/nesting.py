"""Nesting depth of a JSON text, measured without parsing it (nothing recursive runs on a hostile body).

Contract: `Structure.of(text)` finds the structural bytes (brackets, commas outside strings, unescaped
quotes) with vectorized numpy passes, linear in the text whatever it holds; `max_depth` is the deepest
container nesting (a scalar is depth 0, `{}` depth 1); `path_to_depth(limit)` gives the keys and indices
leading to the first container nested deeper than `limit`. Exact for valid JSON; for invalid JSON exact up to
the first syntax error, which is as far as a parser gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("{"), ord("[")]] = 1
_STEP[[ord("}"), ord("]")]] = -1


def _unescaped_quotes(data: np.ndarray) -> np.ndarray:
    """Offsets of the quotes not preceded by an odd run of backslashes (the string delimiters)."""
    quotes = np.flatnonzero(data == _QUOTE)
    if quotes.size == 0 or not (data == _BACKSLASH).any():
        return quotes
    index = np.arange(data.size, dtype=np.int32 if data.size < 2**31 else np.int64)
    last_plain = np.maximum.accumulate(np.where(data == _BACKSLASH, -1, index))  # last non-backslash so far
    before = quotes - 1
    run = np.where(before >= 0, before - last_plain[np.maximum(before, 0)], 0)  # backslashes just before
    return quotes[run % 2 == 0]


@dataclass(frozen=True)
class Structure:
    text: bytes
    quotes: np.ndarray  # offsets of unescaped quotes
    offsets: np.ndarray  # offsets of brackets and commas outside strings
    depth: np.ndarray  # nesting depth after each of them

    @classmethod
    def of(cls, text: bytes) -> Structure:
        data = np.frombuffer(text, dtype=np.uint8)
        quotes = _unescaped_quotes(data)
        candidates = np.flatnonzero((_STEP[data] != 0) | (data == _COMMA))
        outside = np.searchsorted(quotes, candidates) % 2 == 0  # an even number of quotes before it
        offsets = candidates[outside]
        depth = np.cumsum(_STEP[data[offsets]], dtype=np.int64)
        return cls(text, quotes, offsets, depth)

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if self.depth.size else 0

    def path_to_depth(self, limit: int) -> list[str]:
        """Keys/indices (as strings) to the first container nested deeper than `limit` (< `max_depth`)."""
        first = int(np.argmax(self.depth > limit))
        containers = self._enclosing(first, limit)
        return [self._key(containers[level], containers[level + 1], level + 1) for level in range(limit)]

    def _enclosing(self, first: int, limit: int) -> list[int]:
        """Offsets of the containers at levels 1..limit that enclose entry `first`, then its own offset."""
        opens = np.flatnonzero(_STEP[self._bytes(self.offsets[:first])] == 1)
        levels = self.depth[opens][::-1]
        _, last = np.unique(levels, return_index=True)  # per level, its last opening before `first`
        chosen = opens[::-1][last]
        return [int(self.offsets[i]) for i in chosen[:limit]] + [int(self.offsets[first])]

    def _key(self, parent: int, child: int, level: int) -> str:
        """The member name or array index under which `child` sits in `parent` (at depth `level`)."""
        if self.text[parent] == ord("["):
            lo, hi = np.searchsorted(self.offsets, [parent, child])
            between = self.offsets[lo:hi]
            commas = (self._bytes(between) == _COMMA) & (self.depth[lo:hi] == level)
            return str(int(commas.sum()))
        end = int(np.searchsorted(self.quotes, child))  # the name is the last string before the child
        if end < 2:
            return ""  # invalid JSON (a container where a name should be)
        start, stop = self.quotes[end - 2], self.quotes[end - 1]
        raw = self.text[start : stop + 1]
        try:
            return str(json.loads(raw))
        except ValueError:
            return raw[1:-1].decode("utf-8", "replace")

    def _bytes(self, offsets: np.ndarray) -> np.ndarray:
        return np.frombuffer(self.text, dtype=np.uint8)[offsets]
