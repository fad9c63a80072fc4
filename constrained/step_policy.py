"""What one decode step allows each row: its mask, its token within budget, the tokens appended after it.

Contract (`StepPolicy`, over the batch's `BatchRow`s and their `RowConstraint`s; the row state it reads and
changes is the row's own):
- `masks(rows)`: the grammar bitmask (on the CPU) of every row in its current state, None when no row is
  constrained. A grammar failure while filling a row fails that request only (the row is finished and its
  mask allows any token: it leaves the batch after this step).
- `sample(logits, rows, history, bitmask)`: every row's next token and, when a row asks for them, the
  logprobs. No pre-masking near the budget: a sampled token that would leave no room to finish the output
  within `max_tokens` (`RowConstraint.fits`) is re-drawn among the closing tokens, batched over those rows.
- `append_forced(row)`: after the sampled token, the tokens appended to it, accepted by the row's constraint
  and counted as generated: the reasoning closing tag once the thinking budget is spent (where the grammar
  takes it and there is room), else the tokens the constraint forces next (fast-forward: when `fast_forward`
  is on, the request asks for no logprobs and the output can still be completed within its budget).
- `context_full(row)`: the prompt and the output fill the context window.
"""

from __future__ import annotations

import logging

import torch
from transformers import PreTrainedTokenizerBase

from constrained.batch import BatchRow
from constrained.bitmask import allocate_bitmask
from constrained.sampling import TokenHistory, sample
from constrained.token_index.errors import RegexUnsupported

log = logging.getLogger(__name__)
_FORCED_LIMIT = 32  # most forced tokens appended to a row in one step


class StepPolicy:
    """The per-step decisions for the batch's rows (see the module contract)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        vocab_size: int,
        device: torch.device | str,
        context_window: int,
        fast_forward: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.device = device
        self.context_window = context_window
        self.fast_forward = fast_forward

    # ------------------------------------------------------------------ masks
    def masks(self, rows: list[BatchRow]) -> torch.Tensor | None:
        """The grammar bitmask of every row in its current state (None when no row is constrained)."""
        if not any(row.constraint is not None for row in rows):
            return None
        bitmask = allocate_bitmask(len(rows), self.vocab_size, device="cpu")
        for i, row in enumerate(rows):
            if row.constraint is not None and not row.finished:
                self._fill_row(row, bitmask, i)
        return bitmask

    @staticmethod
    def _fill_row(row: BatchRow, bitmask: torch.Tensor, index: int) -> None:
        """Fill one row's mask; a grammar failure (e.g. automaton budget exceeded) fails that request only."""
        try:
            row.constraint.fill(bitmask, index)
        except Exception as exc:
            log.warning("grammar failure: %s", exc)
            _fail_constraint(row, exc)
            row.finished = True
            bitmask[index] = -1  # any token: the row is dropped after this step

    # ------------------------------------------------------------------ sampling within budget
    def sample(
        self, logits: torch.Tensor, rows: list[BatchRow], history: TokenHistory, bitmask: torch.Tensor | None
    ) -> tuple[list[int], torch.Tensor | None]:
        """Every row's next token (re-drawn among the closing tokens when over budget), and the logprobs."""
        want_logprobs = any(row.handle.request.logprobs for row in rows)
        result = sample(
            logits,
            [row.handle.request.params for row in rows],
            history=history,
            bitmask=bitmask,
            generators=[row.generator for row in rows],
            return_logprobs=want_logprobs,
        )
        tokens = result.token_ids.tolist()
        self._close_within_budget(logits, rows, history, tokens, result.logprobs)
        return tokens, result.logprobs

    def _close_within_budget(
        self,
        logits: torch.Tensor,
        rows: list[BatchRow],
        history: TokenHistory,
        tokens: list[int],
        logprobs: torch.Tensor | None,
    ) -> None:
        """Re-draw, among closing tokens, the rows whose token would leave no room to finish the output."""
        redo = [
            i for i, (row, token) in enumerate(zip(rows, tokens, strict=True)) if _over_budget(row, token)
        ]
        if not redo:
            return
        bitmask = allocate_bitmask(len(redo), self.vocab_size, device="cpu")
        for slot, i in enumerate(redo):
            rows[i].constraint.fill_closing(bitmask, slot, _remaining(rows[i]))
        index = torch.tensor(redo, dtype=torch.long, device=self.device)
        result = sample(
            logits.index_select(0, index),
            [rows[i].handle.request.params for i in redo],
            history=history.select(index),
            bitmask=bitmask.to(self.device),
            generators=[rows[i].generator for i in redo],
            return_logprobs=logprobs is not None,
        )
        for slot, i in enumerate(redo):
            tokens[i] = int(result.token_ids[slot])
        if logprobs is not None:
            logprobs[index] = result.logprobs

    # ------------------------------------------------------------------ appended tokens
    def append_forced(self, row: BatchRow) -> list[int]:
        """Accept the tokens the constraint forces next (none when off, for logprobs requests, or when they
        would leave too few tokens to close the output); they are fed to the model at the next step."""
        request, constraint = row.handle.request, row.constraint
        if request.reasoning is not None and row.thinking:
            return self._close_thinking(row) if row.generated >= request.reasoning.budget else []
        if not self.fast_forward or constraint is None or request.logprobs or constraint.is_terminated():
            return []
        room = min(
            request.max_tokens - row.generated,
            self.context_window - len(request.prompt_ids) - row.generated,
            _FORCED_LIMIT,
        )
        forced = constraint.forced_tokens(self.tokenizer, room - 1)
        if not forced or not constraint.accept_forced(forced, _remaining(row)):
            return []
        row.count_generated(len(forced))
        return forced

    def _close_thinking(self, row: BatchRow) -> list[int]:
        """The reasoning budget is spent: append the closing tag (when the grammar takes it here)."""
        request, constraint = row.handle.request, row.constraint
        tag = self.tokenizer.encode(request.reasoning.close_tag, add_special_tokens=False)
        if row.generated + len(tag) >= request.max_tokens:
            return []  # no room: the budget closing will end the output
        if constraint is not None and not constraint.accept_tokens(tag):
            return []  # the model is writing the tag already
        row.count_generated(len(tag))
        return tag

    def context_full(self, row: BatchRow) -> bool:
        return len(row.handle.request.prompt_ids) + row.generated >= self.context_window


def _fail_constraint(row: BatchRow, exc: Exception) -> None:
    """Fail the row's request: a limit of its constraint (an automaton budget, `RegexUnsupported`) when the
    constraint outgrew it, else an internal failure."""
    limit = isinstance(exc, RegexUnsupported)
    row.handle.fail(f"the constraint failed during generation: {exc}", limit=limit)


def _over_budget(row: BatchRow, token: int) -> bool:
    """The row's token would leave no room to finish its output (a failing check fails the request)."""
    if row.constraint is None or row.finished:
        return False
    try:
        return not row.constraint.fits(token, _remaining(row))
    except Exception as exc:
        log.warning("budget check failed: %s", exc)
        _fail_constraint(row, exc)
        row.finished = True
        return False


def _remaining(row: BatchRow) -> int:
    """Tokens `max_tokens` still allows this row, the next one included (the row's constraint lowers it
    further past a degeneration deadline)."""
    return row.handle.request.max_tokens - row.generated
