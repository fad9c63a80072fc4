"""Packed token bitmasks: which tokens a grammar allows at the next step.

Contract (the xgrammar layout):
- A bitmask is a `torch.int32` tensor of shape `[batch, bitmask_words(vocab_size)]`; bit j (least significant
  first) of word w says whether token `32 * w + j` is allowed. Bits past `vocab_size` in the last word are
  ignored.
- `allocate_bitmask` gives an all-allowed mask (every word -1); `pack_token_ids` packs one row from a list of
  allowed ids; `write_row` copies a packed row into one row of a bitmask (a wider bitmask row gets its extra
  tokens disallowed, a narrower one is cut); `unpack_bitmask` expands rows to booleans.
- `apply_bitmask_(logits, bitmask, rows)` sets the logits of disallowed tokens to -inf in place, on the
  logits' device, in one batched pass. A logits row wider than the mask's bits has its extra tokens
  disallowed (unlike xgrammar, which leaves them untouched: a constrained row must never pick a token its
  grammar did not allow); mask bits past the logits' width are ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

_BYTE_SHIFTS = (0, 8, 16, 24)


def bitmask_words(vocab_size: int) -> int:
    """Number of int32 words one bitmask row needs for `vocab_size` tokens."""
    return (vocab_size + 31) // 32


def allocate_bitmask(batch: int, vocab_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """An all-allowed `[batch, bitmask_words(vocab_size)]` int32 bitmask."""
    return torch.full((batch, bitmask_words(vocab_size)), -1, dtype=torch.int32, device=device)


def pack_token_ids(token_ids: np.ndarray | Sequence[int], vocab_size: int) -> np.ndarray:
    """One bitmask row (int32 words, numpy) allowing exactly `token_ids`; duplicates are harmless."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    words = bitmask_words(vocab_size)
    allowed = np.zeros(words * 32, dtype=np.bool_)
    allowed[ids] = True
    packed = np.packbits(allowed, bitorder="little")  # byte b holds tokens 8b .. 8b+7, lowest bit first
    return packed.view("<i4").astype(np.int32, copy=False)


def write_row(bitmask: torch.Tensor, row: int, mask: np.ndarray) -> None:
    """Copy a packed row (possibly a shared read-only array) into `bitmask[row]`, fitted to its width."""
    words = bitmask.shape[1]
    if mask.shape[0] != words:
        fitted = np.zeros(words, dtype=np.int32)
        n = min(words, mask.shape[0])
        fitted[:n] = mask[:n]
        mask = fitted
    if bitmask.device.type == "cpu":
        bitmask[row].numpy()[:] = mask
    else:
        bitmask[row].copy_(torch.from_numpy(mask.copy()))


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """`[batch, vocab_size]` booleans (True = allowed) from a `[batch, words]` bitmask."""
    if bitmask.shape[-1] * 32 < vocab_size:
        raise ValueError(f"a bitmask of {bitmask.shape[-1]} words cannot cover {vocab_size} tokens")
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*bitmask.shape[:-1], -1)[..., :vocab_size].bool()


@functools.cache
def _byte_penalties(device: torch.device) -> torch.Tensor:
    """`[256, 8]` float32: row b holds 0.0 where bit j of byte b is set and -inf where it is clear."""
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
    return torch.where(bits.bool(), 0.0, float("-inf")).to(device)


def apply_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Set `logits[r, t]` to -inf wherever token t is disallowed, in place.

    `logits` is `[batch, vocab]` float; `bitmask` is `[n, words]` int32. Without `rows`, n == batch and
    bitmask row i applies to logits row i; with `rows` (n distinct indices into logits' rows), bitmask
    row i applies to logits row `rows[i]` and other rows are left alone.

    The mask is turned into additive 0 / -inf penalties through a byte lookup table and added in one batched
    op: on CPU this is several times faster than boolean `masked_fill_`.
    """
    if logits.dim() != 2 or bitmask.dim() != 2:
        raise ValueError("apply_bitmask_ expects [batch, vocab] logits and a [batch, words] bitmask")
    if bitmask.dtype != torch.int32:
        raise ValueError(f"bitmask must be int32, got {bitmask.dtype}")
    expected = logits.shape[0] if rows is None else rows.numel()
    if bitmask.shape[0] != expected:
        raise ValueError(f"bitmask has {bitmask.shape[0]} rows, expected {expected}")
    device = logits.device
    bitmask = bitmask.to(device, non_blocking=True)
    vocab, bits = logits.shape[1], bitmask.shape[1] * 32
    shifts = torch.tensor(_BYTE_SHIFTS, dtype=torch.int32, device=device)
    byte_values = ((bitmask.unsqueeze(-1) >> shifts) & 0xFF).reshape(-1)
    penalty = _byte_penalties(device).index_select(0, byte_values).view(bitmask.shape[0], bits)
    if vocab <= bits:
        penalty = penalty[:, :vocab]
    else:
        tail = penalty.new_full((bitmask.shape[0], vocab - bits), float("-inf"))
        penalty = torch.cat([penalty, tail], dim=1)
    penalty = penalty.to(logits.dtype)
    if rows is None:
        logits.add_(penalty)
    else:
        logits.index_add_(0, rows.to(device), penalty)
