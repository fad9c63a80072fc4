"""Per-tokenizer byte trie of the constrainable tokens, as flat arrays for the numba walk.

Built once per tokenizer (cached by `TokenizerInfo.fingerprint`). Nodes are numbered in DFS pre-order
(root = 0); the children of node `n` are `child_node[child_ptr[n]:child_ptr[n + 1]]` (increasing byte
`child_byte`), and the token ids whose bytes end at `n` are `tok_ids[tok_ptr[n]:tok_ptr[n + 1]]`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

import numpy as np

from constrained.token_index.automaton import STRING_CONTENT
from constrained.tokenizer_info import TokenizerInfo

_CACHE: dict[str, TokenVocabulary] = {}
_CACHE_LOCK = threading.Lock()


class TokenVocabulary:
    def __init__(self, tokens_by_bytes: Mapping[bytes, list[int]], vocab_size: int) -> None:
        """`tokens_by_bytes`: the constrainable tokens (`TokenizerInfo.tokens_by_bytes`); ids past
        `vocab_size` (the logits width) are left out."""
        self.vocab_size = vocab_size
        self.num_words = (vocab_size + 31) // 32
        by_bytes = {
            data: kept
            for data, ids in tokens_by_bytes.items()
            if (kept := [t for t in ids if t < vocab_size])
        }
        # bytes of every constrainable token (None for special/EOS/empty ones)
        self.token_bytes: list[bytes | None] = [None] * vocab_size
        for data, ids in by_bytes.items():
            for tid in ids:
                self.token_bytes[tid] = data
        keys = sorted(by_bytes)
        self.trie = _Trie(keys, by_bytes)
        self.num_nodes = self.trie.num_nodes
        self.max_token_len = max((len(k) for k in keys), default=0)
        # "string slice": tokens that are pure JSON-string content (complete UTF-8, no quote, backslash or
        # control character). `content_upto[c]` holds those of at most `c` characters: in a state from which
        # any `c` content characters lead to live states they are all allowed, so only the other tokens
        # (`rest`) need a trie walk.
        content = [k for k in keys if _is_string_content(k)]
        chars = np.array([len(k.decode("utf-8")) for k in content for _ in by_bytes[k]], dtype=np.int64)
        ids = np.array([t for k in content for t in by_bytes[k]], dtype=np.int64)
        self.content_upto = np.zeros((self.max_token_len + 1, self.num_words), dtype=np.uint32)
        np.bitwise_or.at(self.content_upto, (chars, ids >> 5), np.uint32(1) << (ids & 31).astype(np.uint32))
        np.bitwise_or.accumulate(self.content_upto, axis=0, out=self.content_upto)
        self.rest = _Trie([k for k in keys if not _is_string_content(k)], by_bytes)
        self._scratch = threading.local()

    @classmethod
    def from_info(cls, info: TokenizerInfo) -> TokenVocabulary:
        """The (cached) vocabulary of every non-special, non-EOS token of `info`."""
        vocab = _CACHE.get(info.fingerprint)
        if vocab is None:
            with _CACHE_LOCK:
                vocab = _CACHE.get(info.fingerprint)
                if vocab is None:
                    vocab = cls(info.tokens_by_bytes(), info.vocab_size)
                    _CACHE[info.fingerprint] = vocab
        return vocab

    def scratch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-thread work stacks for the trie walk (sized so they can never overflow)."""
        bufs = getattr(self._scratch, "bufs", None)
        if bufs is None:
            n = self.num_nodes + 1
            bufs = tuple(np.empty(n, dtype=np.int32) for _ in range(4))
            self._scratch.bufs = bufs
        return bufs


_CONTENT_RUN = re.compile(
    "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in STRING_CONTENT) + "]*"
)  # a run of JSON-string content characters (`automaton.STRING_CONTENT`)


def _is_string_content(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _CONTENT_RUN.fullmatch(text) is not None


class _Trie:
    """Byte trie of `keys` (sorted, distinct) in flat arrays; see the module docstring."""

    def __init__(self, keys: list[bytes], by_bytes: dict[bytes, list[int]]) -> None:
        parent = [-1]
        byte = [0]
        path = [0]
        end_node: list[int] = []
        prev = b""
        for key in keys:
            n = min(len(prev), len(key))
            lcp = 0
            while lcp < n and prev[lcp] == key[lcp]:
                lcp += 1
            del path[lcp + 1 :]
            for d in range(lcp, len(key)):
                nid = len(parent)
                parent.append(path[d])
                byte.append(key[d])
                path.append(nid)
            end_node.append(path[len(key)])
            prev = key
        num_nodes = len(parent)
        parent_arr = np.asarray(parent, dtype=np.int64)
        order = np.argsort(parent_arr[1:], kind="stable") + 1  # children grouped by parent, bytes ascending
        self.child_node = order.astype(np.int32)
        self.child_byte = np.asarray(byte, dtype=np.int32)[order]
        counts = np.bincount(parent_arr[1:], minlength=num_nodes)
        self.child_ptr = np.zeros(num_nodes + 1, dtype=np.int32)
        np.cumsum(counts, out=self.child_ptr[1:])
        tok_counts = np.zeros(num_nodes, dtype=np.int64)
        for key, node in zip(keys, end_node, strict=True):
            tok_counts[node] = len(by_bytes[key])
        self.tok_ptr = np.zeros(num_nodes + 1, dtype=np.int32)
        np.cumsum(tok_counts, out=self.tok_ptr[1:])
        tok_ids = np.empty(int(self.tok_ptr[-1]), dtype=np.int32)
        for key, node in zip(keys, end_node, strict=True):
            start = self.tok_ptr[node]
            ids = by_bytes[key]
            tok_ids[start : start + len(ids)] = ids
        self.tok_ids = tok_ids
        self.num_nodes = num_nodes
