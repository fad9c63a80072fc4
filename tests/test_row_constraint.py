"""`constrained.row_constraint.RowConstraint`: exact masks after termination, after a refused token, near the
budget (pre-masking and re-drawing), the degeneration deadline and fast-forward's budget check."""

from __future__ import annotations

import pytest
import torch

from constrained.bitmask import allocate_bitmask, unpack_bitmask
from constrained.grammar import GrammarCompiler
from constrained.hf import GrammarLogitsProcessor
from constrained.row_constraint import RowConstraint
from constrained.tokenizer_info import TokenizerInfo


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def allowed(constraint: RowConstraint, remaining: int | None = None, *, closing: bool = False) -> set[int]:
    """The token ids `fill` (or `fill_closing`) allows."""
    vocab_size = constraint.grammar.info.vocab_size
    bitmask = allocate_bitmask(2, vocab_size)
    if closing:
        constraint.fill_closing(bitmask, 1, remaining)
    else:
        constraint.fill(bitmask, 1, remaining)
    assert bitmask[0].eq(-1).all()  # other rows untouched
    return set(torch.nonzero(unpack_bitmask(bitmask, vocab_size)[1]).flatten().tolist())


def state_mask(constraint: RowConstraint) -> set[int]:
    vocab_size = constraint.grammar.info.vocab_size
    bitmask = allocate_bitmask(1, vocab_size)
    constraint.matcher.fill_bitmask(bitmask, 0)
    return set(torch.nonzero(unpack_bitmask(bitmask, vocab_size)[0]).flatten().tolist())


def test_terminated_row_allows_exactly_eos(compiler, tokenizer):
    eos = set(compiler.info.eos_token_ids)
    row = RowConstraint(compiler.compile_regex("[0-9]+"), closing_margin=8)
    assert row.accept_tokens(encode(tokenizer, "12")) and row.can_terminate()
    before = allowed(row)
    assert eos < before and len(before) > len(eos)  # more digits, or the end
    assert row.accept(min(eos)) and row.is_terminated()
    for remaining in (None, 1, 100):
        assert allowed(row, remaining) == eos
    assert row.forced_tokens(tokenizer) == [] and not row.accept(encode(tokenizer, "3")[0])


def test_refused_token_changes_nothing_and_a_failed_row_allows_exactly_eos(compiler, tokenizer):
    row = RowConstraint(compiler.compile_regex("[0-9]+"))
    state = row.matcher.state
    assert not row.accept(encode(tokenizer, "x")[0])
    assert row.matcher.state == state and row.accepted == 0 and not row.is_terminated()
    row.fail()  # the caller's decision (HF, vLLM); the engine fails the request instead
    assert row.is_terminated() and not row.can_terminate()
    assert allowed(row) == allowed(row, 1) == set(compiler.info.eos_token_ids)
    assert row.forced_tokens(tokenizer) == []


def test_premasking_starts_at_the_margin(compiler, tokenizer):
    """Within `closing_margin` of the budget only the closing tokens are allowed; before it, the grammar's."""
    row = RowConstraint(compiler.compile_regex('"[a-z]*"'), closing_margin=8)
    assert row.accept(encode(tokenizer, '"')[0])
    assert row.grammar.closing.distance(row.matcher.state) == 1
    quote = set(encode(tokenizer, '"'))
    full = state_mask(row)
    assert len(full) > 100
    for remaining in (1, 5, 9):  # distance 1 + margin 8 >= remaining
        assert allowed(row, remaining) == quote
    for remaining in (10, 100, None):
        assert allowed(row, remaining) == full
    no_margin = RowConstraint(row.grammar)  # the engine's and vLLM's rows: never pre-masked
    assert no_margin.accept(encode(tokenizer, '"')[0]) and allowed(no_margin, 1) == full


def test_near_the_budget_only_tokens_on_a_shortest_completion_path(compiler):
    """`a{40}` closes in 10 greedy tokens ("aaaa" x 10): with budget b, a token is allowed exactly when the
    rest still fits in b - 1 tokens; with no such token, pre-masking keeps the grammar's mask and the
    engine's re-draw mask is empty."""
    row = RowConstraint(compiler.compile_regex("a{40}"), closing_margin=8)
    grammar, state = row.grammar, row.matcher.state
    assert grammar.closing.distance(state) == 10
    full = state_mask(row)
    by_bytes = {grammar.info.token_bytes[t]: t for t in full}
    assert set(by_bytes) == {b"a", b"aa", b"aaaa"}

    def on_path(budget: int) -> set[int]:
        return {t for t in full if grammar.closing.distance(grammar.next_state(state, t)) <= budget - 1}

    assert on_path(10) == {by_bytes[b"aaaa"]}
    assert on_path(11) == {by_bytes[b"aa"], by_bytes[b"aaaa"]}
    for budget in range(1, 19):
        expected = on_path(budget)
        assert allowed(row, budget, closing=True) == expected
        assert allowed(row, budget) == (expected or full)
        for token in full:
            assert row.fits(token, budget) == (token in expected)
    assert row.fits(min(grammar.info.eos_token_ids), 1)  # EOS always fits


def test_a_row_that_may_end_closes_with_eos(compiler, tokenizer):
    row = RowConstraint(compiler.compile_regex("[0-9]{1,3}"), closing_margin=8)
    assert row.accept(encode(tokenizer, "7")[0]) and row.grammar.closing.distance(row.matcher.state) == 0
    eos = set(compiler.info.eos_token_ids)
    assert allowed(row, 1) == allowed(row, 8) == allowed(row, 1, closing=True) == eos
    assert eos < allowed(row, 9)


def test_degeneration_deadline(compiler, tokenizer):
    x, y = encode(tokenizer, "x")[0], encode(tokenizer, "y")[0]
    grammar = compiler.compile_regex("x*y")
    row = RowConstraint(grammar, repeat_limit=3)
    assert row.accept(x) and row.accept(x)
    assert row.deadline is None and row.budget(100) == 100
    assert row.accept(x)  # "x" three times: close by the shortest completion ("y", one token)
    assert row.deadline == 3 + 1 and row.budget(100) == 1 and row.budget(0) == 0
    assert not row.fits(x, 100) and row.fits(y, 100)
    assert allowed(row, 100, closing=True) == {y}
    free = RowConstraint(grammar)  # repeat_limit 0: no guard
    for _ in range(10):
        assert free.accept(x)
    assert free.deadline is None and free.budget(100) == 100


def test_forced_tokens_are_kept_only_within_the_budget(compiler, tokenizer):
    grammar = compiler.compile_regex("hello world")
    forced = encode(tokenizer, "hello")
    probe = RowConstraint(grammar)
    assert probe.accept_tokens(forced)
    rest = grammar.closing.distance(probe.matcher.state)
    assert rest >= 1
    row = RowConstraint(grammar)
    state = row.matcher.state
    assert not row.accept_forced(forced, len(forced) + rest)  # no room left for the rest
    assert row.matcher.state == state and row.accepted == 0
    assert row.accept_forced(forced, len(forced) + rest + 1)
    assert row.accepted == len(forced) and row.matcher.state == probe.matcher.state
    row.rollback(len(forced))
    assert row.accepted == 0 and row.matcher.state == state


def test_wider_bitmask_disallows_the_extra_tokens(compiler, tokenizer):
    row = RowConstraint(compiler.compile_regex("[0-9]+"))
    vocab_size = compiler.info.vocab_size
    bitmask = allocate_bitmask(1, vocab_size + 64)
    row.fill(bitmask, 0)
    bits = unpack_bitmask(bitmask, vocab_size + 64)[0]
    assert not bits[vocab_size:].any()
    assert set(torch.nonzero(bits).flatten().tolist()) == state_mask(row)
    row.fail()
    row.fill(bitmask, 0)
    bits = unpack_bitmask(bitmask, vocab_size + 64)[0]
    assert set(torch.nonzero(bits).flatten().tolist()) == set(compiler.info.eos_token_ids)


def test_hf_dead_row_is_eos_only_until_the_next_generation(compiler, tokenizer):
    """A row that took a refused token allows only EOS; a new generate call (shorter input) starts afresh."""
    grammar = compiler.compile_regex("[0-9]+")
    processor = GrammarLogitsProcessor(grammar)
    vocab_size = compiler.info.vocab_size
    prompt = torch.tensor([encode(tokenizer, "N: "), encode(tokenizer, "N: ")])
    processor(prompt, torch.zeros(2, vocab_size))
    step = torch.cat([prompt, torch.tensor([encode(tokenizer, "x"), encode(tokenizer, "1")])], dim=1)
    scores = processor(step, torch.zeros(2, vocab_size))
    assert processor.dead_rows == {0}
    assert set(torch.nonzero(torch.isfinite(scores[0])).flatten().tolist()) == set(
        compiler.info.eos_token_ids
    )
    assert processor.rows[0].failed and not processor.rows[1].failed
    scores = processor(prompt, torch.zeros(2, vocab_size))  # a new generation
    assert processor.dead_rows == set() and torch.equal(scores[0], scores[1])
    assert len(torch.nonzero(torch.isfinite(scores[0]))) > len(compiler.info.eos_token_ids)
