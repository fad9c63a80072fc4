"""Incremental detokenization with stop strings.

Contract: `IncrementalText.push(token_ids)` returns the newly *safe* text: text that cannot change with later
tokens (no incomplete UTF-8 sequence at the end) and that cannot be the beginning of a stop string. When a
stop string appears, the text is cut before it, `stopped` becomes True, and nothing more is returned.
`flush()` releases what was held back when the sequence ends for another reason. Each push decodes only a
short window of recent tokens (as vLLM does: the text of `ids[prefix:]` minus that of `ids[prefix:read]`),
so a token costs the same however long the output already is.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


class IncrementalText:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here gives the context the next token's text needs
        self._read = 0  # ids before this are already in _text
        self._text = ""  # decoded text of all ids, stable part only
        self._emitted = 0  # characters of _text already returned
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything returned so far."""
        return self._text[: self._emitted]

    def push(self, token_ids: Sequence[int]) -> str:
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        window = self._tokenizer.decode(self._ids[self._prefix :], skip_special_tokens=True)
        if window.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 character: wait for the next token
        known = self._tokenizer.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        text = self._text + window[len(known) :]
        self._prefix, self._read = self._read, len(self._ids)
        self._text = text
        hits = [at for stop in self._stop if (at := text.find(stop, self._emitted)) != -1]
        if hits:
            self._text = text[: min(hits)]
            self.stopped = True
            return self._release(len(self._text))
        return self._release(len(text) - self._held_back(text))

    def flush(self) -> str:
        return "" if self.stopped else self._release(len(self._text))

    def _held_back(self, text: str) -> int:
        """Length of the longest suffix of `text` that starts some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        delta = self._text[self._emitted : upto]
        self._emitted = upto
        return delta
