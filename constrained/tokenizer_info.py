"""What the constraint machinery needs to know about a tokenizer: the exact bytes of every token.

Contract: `TokenizerInfo.from_huggingface(tok, vocab_size)` gives `token_bytes[i]` = the bytes token `i`
contributes to the decoded text (byte-level BPE, SentencePiece `▁`/`<0xNN>` and tiktoken-style vocabularies),
`special_ids` (control tokens that never appear inside constrained text), `eos_token_ids` (tokens that end a
sequence: `eos_token_ids(tok)`, which the engine also uses) and `vocab_size` (the model's logits width,
which may exceed the tokenizer's length). A `fingerprint` identifies the vocabulary for cache keys.
`tokens_by_bytes()` is the one definition of the tokens a constraint may allow: every non-empty token that is
neither special nor end-of-sequence, by its bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache

from transformers import PreTrainedTokenizerBase


@cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (printable stand-ins for the 256 byte values)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


def _is_byte_level(vocab: dict[str, int]) -> bool:
    return any(tok.startswith("Ġ") for tok in vocab) or "Ċ" in vocab


def _token_bytes(token: str, byte_level: bool) -> bytes:
    if byte_level:
        decoder = _byte_decoder()
        if all(ch in decoder for ch in token):
            return bytes(decoder[ch] for ch in token)
        return token.encode()
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("▁", " ").encode()


def eos_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The tokens that end a sequence: the tokenizer's `eos_token_id` (none when it has none)."""
    return frozenset() if tokenizer.eos_token_id is None else frozenset({tokenizer.eos_token_id})


@dataclass(frozen=True)
class TokenizerInfo:
    token_bytes: tuple[bytes, ...]
    eos_token_ids: frozenset[int]
    special_ids: frozenset[int]
    vocab_size: int
    fingerprint: str = field(compare=False)

    @classmethod
    def from_huggingface(
        cls, tokenizer: PreTrainedTokenizerBase, vocab_size: int | None = None
    ) -> TokenizerInfo:
        vocab = tokenizer.get_vocab()
        size = max(vocab_size or 0, len(tokenizer), max(vocab.values()) + 1)
        byte_level = _is_byte_level(vocab)
        table = [b""] * size
        for token, idx in vocab.items():
            table[idx] = _token_bytes(token, byte_level)
        special = set(tokenizer.all_special_ids) | {
            idx for idx, tok in tokenizer.added_tokens_decoder.items() if tok.special
        }
        special |= {idx for idx in range(size) if not table[idx]}
        eos = eos_token_ids(tokenizer)
        digest = hashlib.sha256()
        for idx, data in enumerate(table):
            digest.update(idx.to_bytes(4, "little") + len(data).to_bytes(2, "little") + data)
        digest.update(repr(sorted(eos)).encode())
        return cls(tuple(table), eos, frozenset(special), size, digest.hexdigest()[:24])

    def tokens_by_bytes(self) -> dict[bytes, list[int]]:
        """The tokens a constraint may allow, by their bytes (ids ascending): every non-empty token that is
        neither special nor end-of-sequence."""
        excluded = self.special_ids | self.eos_token_ids
        by_bytes: dict[bytes, list[int]] = {}
        for token_id, data in enumerate(self.token_bytes):
            if data and token_id not in excluded:
                by_bytes.setdefault(data, []).append(token_id)
        return by_bytes
