"""The running batch: one row per choice being decoded, kept in step with the runtime's KV cache.

Contract:
- `Batch(runtime, tokenizer)` owns the `ModelRuntime`'s KV cache and the penalties' `TokenHistory`; row `i`
  of `rows`, of the KV cache and of `history` are always the same sequence.
- `admit(handles)` runs one prefill forward pass over the requests' prompts (the `n` choices of a request
  share its prompt's KV cache) and appends their rows (`BatchRow`, seeded from `params.seed` and the choice
  index) at the end of the batch; it returns the new rows, their history and their logits.
- `decode()` runs one forward pass feeding every row its `feed`; `record(first_row, tokens)` adds one
  sampled token per row, from `first_row` on, to the history.
- `drop_finished()` removes the rows that are finished or whose request was cancelled (from the KV cache
  and the history too); `reset()` empties the batch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from constrained.detokenizer import IncrementalText
from constrained.generation import RequestHandle
from constrained.row_constraint import RowConstraint
from constrained.runtimes.base import ModelRuntime
from constrained.sampling import TokenHistory


@dataclass
class BatchRow:
    """One choice of a request, decoded in one row of the batch."""

    handle: RequestHandle
    index: int
    constraint: RowConstraint | None  # the row's matcher, closing budget and degeneration guard
    generator: torch.Generator
    text: IncrementalText
    generated: int = 0
    feed: list[int] = field(default_factory=list)  # fed to the model at the next step: sampled + forced
    finished: bool = False
    thinking: bool = True  # (reasoning requests) the closing tag has not been written yet
    tail: str = ""  # (reasoning requests) the last characters emitted, to spot the closing tag

    def count_generated(self, num_tokens: int) -> None:
        """Count tokens added to the output (sampled or appended) for the row and its request's usage."""
        self.generated += num_tokens
        self.handle.completion_tokens += num_tokens

    def watch_thinking(self, text: str) -> None:
        """(reasoning requests) Note emitted `text`; thinking ends once the closing tag has been written."""
        reasoning = self.handle.request.reasoning
        if reasoning is not None and self.thinking:
            self.tail = (self.tail + text)[-4 * len(reasoning.close_tag) :]
            self.thinking = reasoning.close_tag not in self.tail


@dataclass(frozen=True)
class Admitted:
    """Rows that just joined the batch, at `first_row` on, with their prompts' history and prefill logits."""

    first_row: int
    rows: list[BatchRow]
    history: TokenHistory
    logits: torch.Tensor


class Batch:
    """The rows being decoded, their token history and the runtime's KV cache, kept row-aligned."""

    def __init__(self, runtime: ModelRuntime, tokenizer: PreTrainedTokenizerBase) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.device = runtime.device
        self.vocab_size = runtime.vocab_size
        self.rows: list[BatchRow] = []
        self.history = TokenHistory.empty(self.vocab_size, self.device)

    def admit(self, handles: list[RequestHandle]) -> Admitted:
        """One forward pass over the prompts; the n choices of a request share its prompt's KV cache."""
        prompts = [handle.request.prompt_ids for handle in handles]
        logits = self.runtime.prefill(prompts, [handle.request.n for handle in handles])
        rows = [self._new_row(handle, i) for handle in handles for i in range(handle.request.n)]
        first_row = len(self.rows)
        history = TokenHistory.from_prompts(
            [row.handle.request.prompt_ids for row in rows], self.vocab_size, self.device
        )
        self.rows = self.rows + rows
        self.history = self.history.concat(history)
        return Admitted(first_row, rows, history, logits)

    def _new_row(self, handle: RequestHandle, index: int) -> BatchRow:
        request = handle.request
        generator = torch.Generator(device=self.device)
        seed = request.params.seed
        generator.manual_seed(secrets.randbits(63) if seed is None else (seed * 1_000_003 + index) % 2**63)
        # No closing margin: the engine does not pre-mask near the budget, it re-draws a token over it
        # (`StepPolicy.sample`).
        grammar, limit = request.grammar, request.repeat_limit
        constraint = RowConstraint(grammar, repeat_limit=limit) if grammar is not None else None
        return BatchRow(handle, index, constraint, generator, IncrementalText(self.tokenizer, request.stop))

    def decode(self) -> torch.Tensor:
        """One forward pass feeding every row its `feed`: the logits of every row."""
        return self.runtime.decode([row.feed for row in self.rows])

    def record(self, first_row: int, tokens: list[int]) -> None:
        """Add `tokens[i]` to the history of row `first_row + i`."""
        token_tensor = torch.tensor(tokens, dtype=torch.long, device=self.device)
        self.history.append(token_tensor, rows=slice(first_row, first_row + len(tokens)))

    def drop_finished(self) -> None:
        """Remove the finished and cancelled rows from the batch, the KV cache and the history."""
        keep = [
            i for i, row in enumerate(self.rows) if not row.finished and not row.handle.cancelled.is_set()
        ]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.reset()
            return
        self.runtime.keep(keep)
        self.history = self.history.select(torch.tensor(keep, dtype=torch.long, device=self.device))
        self.rows = [self.rows[i] for i in keep]

    def reset(self) -> None:
        """Empty the batch and the runtime's KV cache."""
        self.rows = []
        self.runtime.reset()
        self.history = TokenHistory.empty(self.vocab_size, self.device)
