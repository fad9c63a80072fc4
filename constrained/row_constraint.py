"""One row's constraint at decode time: the per-row work the engine, the HF and the vLLM processors share.

Contract:
- `RowConstraint(grammar, *, closing_margin=None, repeat_limit=0)` follows one sequence (an engine row, a row
  of an HF `generate` batch, a vLLM request) through `grammar` with its own `Matcher`. The end-of-sequence
  ids are the grammar's (`grammar.info.eos_token_ids`). The budget is given per call as `remaining`: the
  tokens the row may still generate, the next one included (each caller counts it its own way).
- Masks. `fill(bitmask, row, remaining=None)` writes the row's allowed tokens into `bitmask[row]`:
  only EOS once the row `is_terminated()` (EOS accepted, or `fail()`ed); else, with a `closing_margin` and a
  `remaining`, once the shortest completion plus the margin reaches the budget, only the closing tokens
  (`closing.ClosingPlan.closing_tokens`, plus EOS where the output may end here; the grammar's mask when
  there are none): **pre-masking**, the HF processor's policy; else the grammar's mask of the state.
  `closing_margin=None` (the engine, vLLM) never pre-masks. A bitmask wider than the grammar's vocabulary
  gets the extra tokens disallowed (`bitmask.write_row`).
- Re-drawing, the engine's policy instead of pre-masking: `fits(token, remaining)` says whether after
  `token` the output can still be completed within the budget; `fill_closing(bitmask, row, remaining)`
  writes only the closing tokens (plus EOS where the output may end), even when there are none.
- Tokens. `accept(token) -> bool` takes one sampled token (False: refused, nothing changed; the caller
  decides: the engine fails the request, HF and vLLM `fail()` the row). `accept_tokens(tokens)` takes
  appended tokens all or none (a reasoning closing tag, a vLLM StructuredOutputGrammar batch).
  `accept_forced(tokens, remaining)` takes fast-forwarded tokens unless the output could no longer be
  completed within the budget after them (then nothing changes and it returns False). `rollback(n)` undoes
  the last `n` accepted tokens; `accepted` counts the tokens accepted and not rolled back. `fail()` only
  changes what `fill`, `forced_tokens` and `is_terminated` report.
- `forced_tokens(tokenizer, limit)`: the tokens the grammar forces next (`constrained.fast_forward`; none
  once failed). `can_terminate()`: the output so far is complete.
- Degeneration guard (`repeat_limit > 0`, the engine's): the tokens taken by `accept` and `accept_forced`
  are watched; once a cycle of 1-4 tokens repeats `repeat_limit` times, a deadline is set at the shortest
  completion from there, and `budget(remaining)` (what `fill`, `fits`, `fill_closing` and `accept_forced`
  use) is the smaller of `remaining` and the tokens left to the deadline, so the closing policy steers the
  row to its end (a deadline set during `accept_forced` counts from after its tokens). `rollback` leaves
  the guard's window alone (the engine, the one caller with a guard, rolls back only
  inside `accept_forced`, before its tokens are watched).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from constrained.bitmask import pack_token_ids, write_row
from constrained.fast_forward import forced_tokens
from constrained.grammar import Grammar

GUARD_WINDOW = 4 * 64  # tokens remembered by the degeneration guard (cycles up to 4 tokens, 64 repeats)


class RowConstraint:
    """One sequence's matcher plus its per-row policy state (failed, degeneration deadline)."""

    def __init__(self, grammar: Grammar, *, closing_margin: int | None = None, repeat_limit: int = 0) -> None:
        self.grammar = grammar
        self.matcher = grammar.matcher()
        self.closing_margin = closing_margin
        self.repeat_limit = repeat_limit
        self.accepted = 0
        self.failed = False
        self.deadline: int | None = None  # set by the degeneration guard, in `accepted` tokens
        self._recent: deque[int] | None = deque(maxlen=GUARD_WINDOW) if repeat_limit > 0 else None

    # ------------------------------------------------------------------ state
    def is_terminated(self) -> bool:
        """Only end-of-sequence may follow: EOS was accepted, or the row failed."""
        return self.failed or self.matcher.is_terminated()

    def can_terminate(self) -> bool:
        return self.matcher.can_terminate()

    def fail(self) -> None:
        """The row took a token outside the grammar: from now on only end-of-sequence is allowed."""
        self.failed = True

    def budget(self, remaining: int) -> int:
        """Tokens the row may still generate, the next one included: `remaining`, or fewer past a deadline."""
        return remaining if self.deadline is None else min(remaining, self.deadline - self.accepted)

    # ------------------------------------------------------------------ masks
    def fill(self, bitmask: torch.Tensor, row: int, remaining: int | None = None) -> None:
        """Write the row's allowed tokens into `bitmask[row]` (EOS only / closing tokens / the state's)."""
        if self.failed:
            write_row(bitmask, row, self.grammar.eos_mask)
            return
        matcher = self.matcher
        closing = self.grammar.closing
        if (
            self.closing_margin is not None
            and remaining is not None
            and closing is not None
            and not matcher.is_terminated()
        ):
            budget = self.budget(remaining)
            if budget >= 1 and closing.distance(matcher.state) + self.closing_margin >= budget:
                allowed = self._closing_ids(budget)
                if allowed.size:
                    write_row(bitmask, row, pack_token_ids(allowed, self.grammar.info.vocab_size))
                    return
        matcher.fill_bitmask(bitmask, row)  # EOS only once terminated

    def fits(self, token_id: int, remaining: int) -> bool:
        """Whether, after `token_id`, the output can still be completed within the budget."""
        closing = self.grammar.closing
        if closing is None or token_id in self.grammar.info.eos_token_ids:
            return True
        nxt = self.grammar.next_state(self.matcher.state, token_id)
        return nxt is not None and closing.distance(nxt) <= self.budget(remaining) - 1

    def fill_closing(self, bitmask: torch.Tensor, row: int, remaining: int) -> None:
        """Allow only the tokens that complete the output within the budget (this one included)."""
        allowed = self._closing_ids(self.budget(remaining))
        write_row(bitmask, row, pack_token_ids(allowed, self.grammar.info.vocab_size))

    def _closing_ids(self, budget: int) -> np.ndarray:
        allowed = self.grammar.closing.closing_tokens(self.matcher.state, budget)
        if self.matcher.can_terminate():
            allowed = np.concatenate([allowed, self.grammar.eos_ids])
        return allowed

    # ------------------------------------------------------------------ tokens
    def accept(self, token_id: int) -> bool:
        """Take one sampled token (watched by the degeneration guard); False when refused."""
        if not self.matcher.accept_token(token_id):
            return False
        self.accepted += 1
        self._watch(token_id, self.accepted)
        return True

    def accept_tokens(self, token_ids: Sequence[int]) -> bool:
        """Take appended tokens, all or none (not watched by the degeneration guard)."""
        if not self.matcher.accept_tokens(token_ids):
            return False
        self.accepted += len(token_ids)
        return True

    def accept_forced(self, token_ids: Sequence[int], remaining: int) -> bool:
        """Take fast-forwarded tokens unless the output could then no longer be completed within the budget
        (`remaining` counted before them); False (nothing changed) when it could not or one is refused."""
        budget = self.budget(remaining)
        if not self.accept_tokens(token_ids):
            return False
        closing = self.grammar.closing
        if closing is not None and closing.distance(self.matcher.state) > budget - len(token_ids) - 1:
            self.rollback(len(token_ids))
            return False
        for token_id in token_ids:
            self._watch(token_id, self.accepted)
        return True

    def rollback(self, num_tokens: int) -> None:
        self.matcher.rollback(num_tokens)
        self.accepted -= num_tokens

    def forced_tokens(self, tokenizer: Any, limit: int = 32) -> list[int]:
        """The tokens the constraint forces next (none once the row failed or ended)."""
        return [] if self.failed else forced_tokens(self.matcher, tokenizer, limit)

    # ------------------------------------------------------------------ degeneration guard
    def _watch(self, token_id: int, accepted: int) -> None:
        """After a cycle of 1-4 tokens repeats `repeat_limit` times, set the deadline at the shortest
        completion (counted from `accepted` tokens)."""
        recent = self._recent
        if recent is None:
            return
        recent.append(token_id)
        limit = self.repeat_limit
        if self.deadline is not None:
            return
        for period in range(1, 5):
            span = period * limit
            if len(recent) < span:
                return
            tail = list(recent)[-span:]
            if tail == tail[:period] * limit:
                closing = self.grammar.closing
                if closing is not None:
                    self.deadline = accepted + closing.distance(self.matcher.state)
                return
