"""Bitmask packing and masking against plain Python references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constrained.bitmask import (
    allocate_bitmask,
    apply_bitmask_,
    bitmask_words,
    pack_token_ids,
    unpack_bitmask,
)


def reference_pack(allowed: set[int], vocab_size: int) -> list[int]:
    words = [0] * ((vocab_size + 31) // 32)
    for token in allowed:
        words[token // 32] |= 1 << (token % 32)
    return [w - (1 << 32) if w >= 1 << 31 else w for w in words]  # as signed int32


def random_allowed(rng: np.random.Generator, vocab_size: int) -> set[int]:
    return {int(t) for t in np.flatnonzero(rng.random(vocab_size) < 0.4)}


@pytest.mark.parametrize("vocab_size", [1, 31, 32, 33, 45, 64, 100, 1000])
def test_pack_matches_reference_and_roundtrips(vocab_size: int) -> None:
    rng = np.random.default_rng(vocab_size)
    for allowed in (set(), set(range(vocab_size)), {vocab_size - 1}, random_allowed(rng, vocab_size)):
        packed = pack_token_ids(sorted(allowed), vocab_size)
        assert packed.dtype == np.int32 and packed.shape == (bitmask_words(vocab_size),)
        assert packed.tolist() == reference_pack(allowed, vocab_size)
        unpacked = unpack_bitmask(torch.from_numpy(packed)[None], vocab_size)
        assert unpacked.dtype == torch.bool and unpacked.shape == (1, vocab_size)
        assert set(np.flatnonzero(unpacked[0].numpy()).tolist()) == allowed


def test_pack_accepts_numpy_and_duplicates_and_rejects_out_of_range() -> None:
    assert pack_token_ids(np.array([3, 3, 40]), 50).tolist() == reference_pack({3, 40}, 50)
    with pytest.raises(ValueError):
        pack_token_ids([50], 50)
    with pytest.raises(ValueError):
        pack_token_ids([-1], 50)


def test_allocate_is_all_allowed() -> None:
    mask = allocate_bitmask(3, 70)
    assert mask.dtype == torch.int32 and mask.shape == (3, 3)
    assert unpack_bitmask(mask, 70).all()
    logits = torch.randn(3, 70)
    expected = logits.clone()
    apply_bitmask_(logits, mask)
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("vocab_size", [32, 45, 100])
def test_apply_masks_exactly(vocab_size: int) -> None:
    rng = np.random.default_rng(7)
    allowed = [random_allowed(rng, vocab_size) for _ in range(4)]
    bitmask = torch.from_numpy(np.stack([pack_token_ids(sorted(a), vocab_size) for a in allowed]))
    logits = torch.randn(4, vocab_size)
    expected = logits.clone()
    for row, tokens in enumerate(allowed):
        for token in range(vocab_size):
            if token not in tokens:
                expected[row, token] = float("-inf")
    apply_bitmask_(logits, bitmask)
    assert torch.equal(logits, expected)


def test_bitmask_wider_than_logits_ignores_extra_bits() -> None:
    bitmask = torch.from_numpy(pack_token_ids([1, 49, 50, 63], 64))[None]  # 64 bits for 50 logits
    logits = torch.zeros(1, 50)
    apply_bitmask_(logits, bitmask)
    assert set(torch.isfinite(logits[0]).nonzero().flatten().tolist()) == {1, 49}


def test_logits_wider_than_bitmask_disallow_the_tail() -> None:
    bitmask = allocate_bitmask(2, 40)  # 2 words: 64 bits, all set
    logits = torch.zeros(2, 70)
    apply_bitmask_(logits, bitmask)
    assert torch.isfinite(logits[:, :64]).all()
    assert torch.isneginf(logits[:, 64:]).all()


def test_rows_select_which_logits_rows_are_masked() -> None:
    logits = torch.randn(3, 40)
    expected = logits.clone()
    bitmask = torch.from_numpy(np.stack([pack_token_ids([0, 5], 40), pack_token_ids([39], 40)]))
    apply_bitmask_(logits, bitmask, rows=torch.tensor([2, 0]))
    assert torch.equal(logits[1], expected[1])
    assert set(torch.isfinite(logits[2]).nonzero().flatten().tolist()) == {0, 5}
    assert set(torch.isfinite(logits[0]).nonzero().flatten().tolist()) == {39}
    assert logits[2, 5] == expected[2, 5] and logits[0, 39] == expected[0, 39]


def test_apply_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError):
        apply_bitmask_(torch.zeros(3, 40), allocate_bitmask(2, 40))
