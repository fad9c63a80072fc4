"""Constrained decoding inside plain `transformers`: logits processors for `model.generate`.

    from constrained.hf import JSONSchemaLogitsProcessor

    processor = JSONSchemaLogitsProcessor(MyModel, tokenizer)           # or a dict schema
    out = model.generate(**inputs, logits_processor=[processor], do_sample=True, max_new_tokens=200)

Contract:
- `ConstraintLogitsProcessor(constraint, tokenizer)` compiles a `constrained.constraints` value (JSON
  Schema, JSON object, regex, choice, Lark/GBNF grammar, tools; or a list, one per batch item) through the
  constraint layer, as the server does; `JSONSchemaLogitsProcessor` (a schema, a pydantic model or a type)
  and `RegexLogitsProcessor` are its shorthands. A constraint that leaves the output free (tool choice
  "none" without a text constraint) is a ValueError.
- `GrammarLogitsProcessor(grammar)` (or a list of grammars, one per batch item) masks, at every step, the
  tokens the grammar does not allow, with `constrained.bitmask.apply_bitmask_` (one batched op). Each row's
  position in the grammar is tracked from the `input_ids` it is given: the first call fixes the prompt length
  (left padding is fine: all rows have the same length), later calls accept the tokens appended since.
  Rows whose sequence is complete are allowed only the end-of-sequence token (generate pads them).
- Beam search (`num_beams > 1`) is supported: rows are matched to the rows of the previous step they
  continue, so re-ordered beams keep their grammar state. Row `r` of `batch * num_beams` rows uses grammar
  `r // num_beams` when one grammar per batch item is given.
- With `max_new_tokens=N`, the processor steers each row to the shortest completion once its remaining
  budget comes within `CLOSING_MARGIN` tokens of it, so outputs are complete (best effort: one token may
  open more than the margin allows). Without it, a row cut by the length limit is a valid prefix. The
  per-row work (mask, EOS only once ended or dead, this pre-masking) is
  `constrained.row_constraint.RowConstraint` with `closing_margin=CLOSING_MARGIN`.
- One processor serves one `generate` call; it resets itself when it sees sequences no longer than the
  previous call's (a new generation), or call `reset()`. A row that takes a token outside the grammar (a
  beam whose score is already -inf, or another processor overriding the mask) is logged and then allowed
  only the end-of-sequence token; `dead_rows` lists such rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from constrained.api import Compiler, schema_of
from constrained.bitmask import allocate_bitmask, apply_bitmask_
from constrained.constraints import Constraint, JsonSchema, Regex
from constrained.fast_forward import forced_tokens
from constrained.grammar import Grammar, Matcher
from constrained.row_constraint import RowConstraint

log = logging.getLogger(__name__)
__all__ = [
    "ConstraintLogitsProcessor",
    "GrammarLogitsProcessor",
    "JSONSchemaLogitsProcessor",
    "RegexLogitsProcessor",
]

CLOSING_MARGIN = 8  # pre-mask to the closing tokens once the shortest completion + this reaches the budget


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks `model.generate` logits to a `Grammar` (one for all rows, or one per batch item)."""

    def __init__(self, grammar: Grammar | Sequence[Grammar], *, max_new_tokens: int | None = None) -> None:
        grammars = [grammar] if isinstance(grammar, Grammar) else list(grammar)
        if not grammars or not all(isinstance(g, Grammar) for g in grammars):
            raise TypeError("GrammarLogitsProcessor expects a Grammar or a non-empty list of Grammars")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        self.grammars = grammars
        self.max_new_tokens = max_new_tokens
        self.reset()

    def reset(self) -> None:
        """Forget the sequences seen so far (the next call starts a new generation)."""
        self.rows: list[RowConstraint] = []  # one per row: its matcher, closing and dead (failed) state
        self.prompt_length: int | None = None
        self._previous: torch.Tensor | None = None
        self._group = 1  # rows per grammar (num_beams when one grammar per batch item)

    @property
    def dead_rows(self) -> set[int]:
        """Rows that took a token outside the grammar (-inf beams): only end-of-sequence from then on."""
        return {row for row, constraint in enumerate(self.rows) if constraint.failed}

    @property
    def matchers(self) -> list[Matcher]:
        return [constraint.matcher for constraint in self.rows]

    # ------------------------------------------------------------------ LogitsProcessor
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.dim() != 2 or scores.dim() != 2 or input_ids.shape[0] != scores.shape[0]:
            raise ValueError("expected input_ids [batch, length] and scores [batch, vocab]")
        previous = self._previous
        if previous is None or input_ids.shape[1] <= previous.shape[1]:
            self._start(input_ids)
        else:
            self._advance(input_ids)
        self._previous = input_ids.detach().to("cpu", copy=True)
        bitmask = allocate_bitmask(len(self.rows), max(g.info.vocab_size for g in self.grammars))
        remaining = None
        if self.max_new_tokens is not None:
            remaining = self.max_new_tokens - (input_ids.shape[1] - self.prompt_length)
        for row, constraint in enumerate(self.rows):  # EOS only for dead rows; closing near the budget
            constraint.fill(bitmask, row, remaining)
        apply_bitmask_(scores, bitmask.to(scores.device, non_blocking=True))
        return scores

    # ------------------------------------------------------------------ row tracking
    def _grammar_of(self, row: int) -> Grammar:
        return self.grammars[row // self._group] if len(self.grammars) > 1 else self.grammars[0]

    def _start(self, input_ids: torch.Tensor) -> None:
        rows = input_ids.shape[0]
        if len(self.grammars) > 1:
            if rows % len(self.grammars):
                raise ValueError(
                    f"{len(self.grammars)} grammars were given for {rows} rows: give one grammar per batch "
                    "item (rows = batch size x num_beams)"
                )
            self._group = rows // len(self.grammars)
        self.prompt_length = input_ids.shape[1]
        self.rows = [self._new_row(row) for row in range(rows)]

    def _new_row(self, row: int) -> RowConstraint:
        # Pre-masking near the budget (the closing margin); without max_new_tokens no budget is passed.
        return RowConstraint(self._grammar_of(row), closing_margin=CLOSING_MARGIN)

    def _advance(self, input_ids: torch.Tensor) -> None:
        previous = self._previous
        rows, old_length = input_ids.shape[0], previous.shape[1]
        ids = input_ids.detach().to("cpu")
        if rows == previous.shape[0] and torch.equal(ids[:, :old_length], previous):
            parents = list(range(rows))
        else:
            parents = self._find_parents(ids[:, :old_length], previous)
        new_tokens = ids[:, old_length:].tolist()
        constraints, taken = [], set()
        for row, (parent, tokens) in enumerate(zip(parents, new_tokens, strict=True)):
            if self.rows[parent].failed:
                constraints.append(self.rows[parent])
                continue
            if parent in taken:  # a second beam continuing the same sequence: its own matcher
                constraint = self._replay(row, ids[row, self.prompt_length : old_length].tolist())
            else:
                constraint = self.rows[parent]
                taken.add(parent)
            if not constraint.is_terminated():
                for token in tokens:
                    if not constraint.accept(token):
                        constraint.fail()
                        _warn_rejected(row, token)
                        break
                    if constraint.is_terminated():
                        break  # what follows an end-of-sequence token is padding
            constraints.append(constraint)
        self.rows = constraints

    def _find_parents(self, current: torch.Tensor, previous: torch.Tensor) -> list[int]:
        """For each row, a row of the previous step whose sequence it continues (beam search re-orders)."""
        same = (current[:, None, :] == previous[None, :, :]).all(dim=-1)  # [rows, previous rows]
        if len(self.grammars) > 1:  # a beam continues a row of its own batch item
            groups_now = torch.arange(current.shape[0]) // self._group
            groups_before = torch.arange(previous.shape[0]) // self._group
            same &= groups_now[:, None] == groups_before[None, :]
        parents = []
        for row in range(current.shape[0]):
            hits = same[row].nonzero()
            if hits.numel() == 0:
                raise RuntimeError(
                    f"row {row} does not continue any sequence of the previous step: use one processor per "
                    "generate() call (or call reset())"
                )
            parents.append(int(hits[0]))
        return parents

    def _replay(self, row: int, tokens: list[int]) -> RowConstraint:
        """A fresh row for `row` that has accepted `tokens` (the generated part, padding excluded)."""
        constraint = self._new_row(row)
        for token in tokens:
            if constraint.is_terminated() or not constraint.accept(token):
                break
        return constraint

    # ------------------------------------------------------------------ per row
    def forced_tokens(self, row: int, tokenizer: PreTrainedTokenizerBase, limit: int = 32) -> list[int]:
        """Tokens the constraint forces next for `row` (`constrained.fast_forward`): a caller may append them
        to the row's input instead of sampling them one forward pass at a time."""
        # From the matcher, not `RowConstraint.forced_tokens`: a dead row still reports its grammar's tokens.
        return forced_tokens(self.rows[row].matcher, tokenizer, limit)

    def outputs_complete(self) -> list[bool]:
        """Per row: whether the text generated so far is a complete instance (EOS accepted or acceptable)."""
        # From the matcher, not `RowConstraint.is_terminated`: a dead row reports its grammar state.
        return [c.matcher.is_terminated() or c.can_terminate() for c in self.rows]


def _warn_rejected(row: int, token: int) -> None:
    log.warning(
        "row %d took token %d outside the grammar: a beam with score -inf (beam search with fewer allowed "
        "continuations than beams), or a processor after this one changed the choice; it is ended",
        row,
        token,
    )


class ConstraintLogitsProcessor(GrammarLogitsProcessor):
    """`model.generate` output that follows a `constrained.constraints` constraint (or a list of them, one per
    batch item), compiled once per (tokenizer, constraint) and cached."""

    def __init__(
        self,
        constraint: Constraint | Sequence[Constraint],
        tokenizer: Any,
        *,
        max_new_tokens: int | None = None,
        vocab_size: int | None = None,
    ) -> None:
        compiler = Compiler.for_tokenizer(tokenizer, vocab_size=vocab_size).grammar_compiler
        constraints = list(constraint) if isinstance(constraint, list | tuple) else [constraint]
        grammars = [c.compile(compiler) for c in constraints]
        if any(grammar is None for grammar in grammars):
            raise ValueError("the constraint leaves the output free (tool choice 'none'): nothing to enforce")
        super().__init__(grammars, max_new_tokens=max_new_tokens)


class JSONSchemaLogitsProcessor(ConstraintLogitsProcessor):
    """`model.generate` output that is always a JSON instance of `schema`.

    `schema`: a JSON Schema dict, a pydantic model class or any type pydantic describes; or a list of them,
    one per batch item.
    """

    def __init__(
        self,
        schema: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int | None = None,
        vocab_size: int | None = None,
    ) -> None:
        schemas = schema if isinstance(schema, list | tuple) else [schema]
        constraints = [JsonSchema(schema_of(s)) for s in schemas]
        super().__init__(constraints, tokenizer, max_new_tokens=max_new_tokens, vocab_size=vocab_size)


class RegexLogitsProcessor(ConstraintLogitsProcessor):
    """`model.generate` output fully matched by `pattern` (or a list of patterns, one per batch item)."""

    def __init__(
        self,
        pattern: str | Sequence[str],
        tokenizer: Any,
        *,
        max_new_tokens: int | None = None,
        vocab_size: int | None = None,
    ) -> None:
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        constraints = [Regex(p) for p in patterns]
        super().__init__(constraints, tokenizer, max_new_tokens=max_new_tokens, vocab_size=vocab_size)
