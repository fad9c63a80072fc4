"""The contract between the decode loop and a model runtime.

A runtime holds a batch of sequences ("rows", in order) and their KV cache. The engine appends rows with
`prefill`, feeds each row its next tokens with `decode` (usually one; more when tokens were forced), and
drops rows with `keep`; the row order of every logits
tensor returned is the runtime's row order, which is the engine's. Logits are float32 `[rows, vocab_size]`
on `device`. A runtime is used from one thread (the engine's worker).
"""

from __future__ import annotations

from typing import Protocol

import torch


class ModelRuntime(Protocol):
    device: torch.device
    vocab_size: int  # width of the logits (may exceed the tokenizer's length)
    context_window: int  # most tokens (prompt + output) one sequence may hold

    @property
    def rows(self) -> int:
        """Number of sequences in the batch."""
        ...

    def prefill(self, prompts: list[list[int]], copies: list[int]) -> torch.Tensor:
        """Append `copies[i]` rows sharing prompt i (its KV computed once); return the next-token logits
        of the new rows, `[sum(copies), vocab_size]`. On failure no row is added."""
        ...

    def decode(self, tokens: list[list[int]]) -> torch.Tensor:
        """Feed the tokens `tokens[r]` (at least one) to row r, in one forward pass; return the logits that
        follow each row's last token, `[rows, vocab_size]`."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (ascending), in order, freeing the others' cache."""
        ...

    def reset(self) -> None:
        """Drop every row."""
        ...
