"""vLLM's `StructuredOutputGrammar` interface over one of our grammars, for a vLLM build that registers
third-party structured-output backends (none of the public ones does today: serve through the logits
processor of `constrained.vllm_backend`, which re-exports this class).

Contract: `ConstrainedStructuredOutputGrammar(grammar)` keeps one `constrained.row_constraint.RowConstraint`
(no closing margin) and implements `accept_tokens` (all or nothing; a refusal is logged and returns False),
`validate_tokens` (the longest accepted prefix, state unchanged), `rollback`, `fill_bitmask`,
`is_terminated` and `reset`; `num_processed_tokens` counts the tokens accepted, and `forced_tokens`
gives the tokens the grammar forces next (XGrammar's jump-forward, as canonical token ids).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from constrained.grammar import Grammar, Matcher
from constrained.row_constraint import RowConstraint

logger = logging.getLogger(__name__)

try:
    from vllm.v1.structured_output.backend_types import StructuredOutputGrammar as _SOGrammar
except Exception:  # vLLM absent (or too old): the class still works on its own
    _SOGrammar = object  # type: ignore[assignment,misc]


class ConstrainedStructuredOutputGrammar(_SOGrammar):
    """vLLM's `StructuredOutputGrammar` over one of our matchers (for a build that registers backends)."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.constraint = RowConstraint(grammar)

    @property
    def matcher(self) -> Matcher:
        return self.constraint.matcher

    @property
    def num_processed_tokens(self) -> int:
        return self.constraint.accepted

    def accept_tokens(self, request_id: str, tokens: list[int]) -> bool:
        if not self.constraint.accept_tokens(tokens):
            logger.warning("request %s: tokens %s refused by the grammar", request_id, tokens)
            return False
        return True

    def validate_tokens(self, tokens: list[int]) -> list[int]:
        accepted: list[int] = []
        for token in tokens:
            if not self.constraint.accept(token):
                break
            accepted.append(token)
        self.constraint.rollback(len(accepted))
        return accepted

    def rollback(self, num_tokens: int) -> None:
        self.constraint.rollback(num_tokens)

    def fill_bitmask(self, bitmask: torch.Tensor, idx: int) -> None:
        self.constraint.fill(bitmask, idx)

    def forced_tokens(self, tokenizer: Any, limit: int = 32) -> list[int]:
        """The tokens the constraint forces next (XGrammar's jump-forward, as canonical token ids)."""
        return self.constraint.forced_tokens(tokenizer, limit)

    def is_terminated(self) -> bool:
        return self.constraint.is_terminated()

    def reset(self) -> None:
        self.constraint = RowConstraint(self.grammar)
