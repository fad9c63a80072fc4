"""vLLM adapter: serve with our constraints through vLLM (continuous batching, tensor parallel, replicas).

vLLM has no registry for third-party structured-output backends (`structured_outputs_config.backend` is a
fixed list: xgrammar, guidance, outlines, lm-format-enforcer), so the adapter is a **custom logits
processor**, vLLM v1's supported extension point:

    vllm serve MODEL --logits-processors constrained.vllm_backend:ConstrainedLogitsProcessor

(or `LLM(model=..., logits_processors=[ConstrainedLogitsProcessor])`). A request opts in through
`vllm_xargs`: the keys, `ConstraintSpec`, `spec_from_extra_args` and the client-side `xargs_for` live in
`constrained.vllm_xargs` and are re-exported here (`constrained.vllm_backend.xargs_for(response_format=...,
tools=...)`), as is `ConstrainedStructuredOutputGrammar` (`constrained.vllm_structured_output`, vLLM's
`StructuredOutputGrammar` interface for a build that registers backends).

Contract:
- `ConstraintBatch` (vLLM-independent, tested without vLLM) keeps one
  `constrained.row_constraint.RowConstraint` per key (a request id, or a persistent-batch row in the
  processor; no closing margin: vLLM cuts at its own `max_tokens`), advances it from the request's
  output-token list (`sync`: new tokens accepted, a shorter list rolls back, so preemption and re-scheduling
  are harmless), and fills the batch bitmask (`fill_bitmask`) or masks logits in place (`apply`). A token
  the grammar refuses (a vLLM path that bypasses the processor) marks the request `failed`: only
  end-of-sequence stays allowed.
- `ConstrainedLogitsProcessor` (vLLM v1 `LogitsProcessor`, V1 model runner) maps BatchUpdate (removed, added,
  moved; in that order) onto a `ConstraintBatch` keyed by batch row and masks the rows of constrained
  requests; `validate_params` runs the constraint's `check()` at admission, so an invalid schema or an
  unsupported keyword is an HTTP 400 naming it. `is_argmax_invariant()` is False (the mask changes greedy
  picks).
- `ConstrainedLogitsProcessorV2` is the same for Model Runner V2 (`vllm.v1.worker.gpu`), which vLLM selects
  by default when Triton is available: per-slot state from `add_request`, committed tokens read from
  `req_states` (one small device-to-host copy per step of the constrained slots' new tokens).
Each vLLM worker process (one per tensor-parallel rank, per replica) builds its own compiler; grammars are
cached per process, so every rank computes identical masks.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from constrained.bitmask import allocate_bitmask, apply_bitmask_
from constrained.grammar import Grammar, GrammarCompiler
from constrained.row_constraint import RowConstraint
from constrained.vllm_structured_output import ConstrainedStructuredOutputGrammar
from constrained.vllm_xargs import (
    XARG_GRAMMAR,
    XARG_GRAMMAR_SYNTAX,
    XARG_JSON_OBJECT,
    XARG_PARALLEL,
    XARG_REGEX,
    XARG_SCHEMA,
    XARG_TOOL_CHOICE,
    XARG_TOOLS,
    ConstraintSpec,
    spec_from_extra_args,
    xargs_for,
)

__all__ = [
    "XARG_GRAMMAR",
    "XARG_GRAMMAR_SYNTAX",
    "XARG_JSON_OBJECT",
    "XARG_PARALLEL",
    "XARG_REGEX",
    "XARG_SCHEMA",
    "XARG_TOOLS",
    "XARG_TOOL_CHOICE",
    "ConstrainedLogitsProcessor",
    "ConstrainedLogitsProcessorV2",
    "ConstrainedStructuredOutputGrammar",
    "ConstraintBatch",
    "ConstraintSpec",
    "RequestConstraint",
    "spec_from_extra_args",
    "xargs_for",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ the batch
class RequestConstraint:
    """One request's `RowConstraint` and how far into vLLM's list of its output tokens it has read."""

    def __init__(self, constraint: RowConstraint, output_token_ids: Sequence[int] | None = None) -> None:
        self.constraint = constraint
        self.output_token_ids = output_token_ids  # vLLM's live list of the request's output tokens

    @property
    def consumed(self) -> int:
        """Output tokens accepted so far."""
        return self.constraint.accepted

    @property
    def failed(self) -> bool:
        return self.constraint.failed

    def sync(self, output_token_ids: Sequence[int] | None = None) -> None:
        """Catch up with the output tokens: accept new ones; roll back if the list got shorter."""
        tokens = self.output_token_ids if output_token_ids is None else output_token_ids
        if tokens is None or self.failed:
            return
        total = len(tokens)
        if total < self.consumed:
            self.constraint.rollback(self.consumed - total)
        for token in tokens[self.consumed : total]:
            if not self.constraint.accept(int(token)):
                logger.warning("token %s refused by the grammar; only end-of-sequence is allowed now", token)
                self.constraint.fail()
                return

    def rollback(self, num_tokens: int) -> None:
        self.constraint.rollback(num_tokens)

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self.constraint.fill(bitmask, row)  # only EOS once ended or failed

    def forced_tokens(self, tokenizer: Any, limit: int = 32) -> list[int]:
        """The tokens the constraint forces next (none once the request failed)."""
        return self.constraint.forced_tokens(tokenizer, limit)

    def is_terminated(self) -> bool:
        return self.constraint.is_terminated()


@dataclass
class ConstraintBatch:
    """Matchers of the requests in flight, keyed by request id or batch row; fills one batch bitmask."""

    vocab_size: int
    requests: dict[Hashable, RequestConstraint] = field(default_factory=dict)

    def add(
        self, key: Hashable, grammar: Grammar, output_token_ids: Sequence[int] | None = None
    ) -> RequestConstraint:
        """Start (or restart) `key` with a fresh matcher; tokens already in the list are accepted."""
        request = RequestConstraint(RowConstraint(grammar), output_token_ids)
        self.requests[key] = request
        request.sync()
        return request

    def remove(self, key: Hashable) -> None:
        self.requests.pop(key, None)

    def move(self, src: Hashable, dst: Hashable) -> None:
        """`src`'s request now lives at `dst` (replacing whatever was there)."""
        request = self.requests.pop(src, None)
        self.requests.pop(dst, None)
        if request is not None:
            self.requests[dst] = request

    def swap(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.requests.pop(a, None), self.requests.pop(b, None)
        if ra is not None:
            self.requests[b] = ra
        if rb is not None:
            self.requests[a] = rb

    def __contains__(self, key: Hashable) -> bool:
        return key in self.requests

    def __len__(self) -> int:
        return len(self.requests)

    def sync(self, key: Hashable | None = None, output_token_ids: Sequence[int] | None = None) -> None:
        """Advance one request by its new tokens (`output_token_ids`, or its live list), or all of them."""
        if key is not None:
            self.requests[key].sync(output_token_ids)
            return
        for request in self.requests.values():
            request.sync()

    def accept_token(self, key: Hashable, token_id: int) -> bool:
        return self.requests[key].constraint.accept(token_id)

    def rollback(self, key: Hashable, num_tokens: int) -> None:
        self.requests[key].rollback(num_tokens)

    def is_terminated(self, key: Hashable) -> bool:
        return self.requests[key].is_terminated()

    def can_terminate(self, key: Hashable) -> bool:
        return self.requests[key].constraint.can_terminate()

    def fill_bitmask(self, bitmask: torch.Tensor, keys: Iterable[Hashable | None]) -> list[int]:
        """Fill row i for the i-th key (rows of unknown keys / None are set all-allowed); returns the
        rows that were constrained."""
        rows = []
        for row, key in enumerate(keys):
            request = self.requests.get(key) if key is not None else None
            if request is None:
                bitmask[row].fill_(-1)
            else:
                request.fill_bitmask(bitmask, row)
                rows.append(row)
        return rows

    def apply(self, logits: torch.Tensor, row_keys: Mapping[int, Hashable]) -> torch.Tensor:
        """Mask `logits` rows in place: `row_keys` maps a logits row to its request's key."""
        pairs = [(row, key) for row, key in row_keys.items() if key in self.requests]
        if not pairs:
            return logits
        bitmask = allocate_bitmask(len(pairs), self.vocab_size)
        self.fill_bitmask(bitmask, [key for _, key in pairs])
        rows = torch.tensor([row for row, _ in pairs], dtype=torch.long)
        apply_bitmask_(logits, bitmask, rows)
        return logits


# ------------------------------------------------------------------------------------------ vLLM glue
def _compiler_for(vllm_config: Any) -> GrammarCompiler:
    """The shared compiler of the served model's tokenizer, sized to the logits width."""
    from constrained.api import Compiler

    model_config = vllm_config.model_config
    try:
        from vllm.tokenizers import cached_tokenizer_from_config

        tokenizer = cached_tokenizer_from_config(model_config)
    except Exception:  # older / newer vLLM: read the tokenizer folder directly
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            model_config.tokenizer, trust_remote_code=model_config.trust_remote_code
        )
    return Compiler.for_tokenizer(tokenizer, vocab_size=model_config.get_vocab_size()).grammar_compiler


def _validate(sampling_params: Any) -> None:
    spec = spec_from_extra_args(getattr(sampling_params, "extra_args", None))
    if spec is None:
        return
    if getattr(sampling_params, "structured_outputs", None) is not None:
        raise ValueError("constrained_* arguments cannot be combined with vLLM's own structured outputs")
    spec.check()


class _Compiling:
    """Shared by both processors: compiler (built on first constrained request) and spec → grammar."""

    def _setup(self, vllm_config: Any, vocab_size: int) -> None:
        self._vllm_config = vllm_config
        self._compiler: GrammarCompiler | None = None
        self.batch = ConstraintBatch(vocab_size)

    def _grammar(self, sampling_params: Any) -> Grammar | None:
        spec = spec_from_extra_args(getattr(sampling_params, "extra_args", None))
        if spec is None:
            return None
        if self._compiler is None:
            self._compiler = _compiler_for(self._vllm_config)
        return spec.compile(self._compiler)


try:  # vLLM v1 (V1 model runner) interface
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
    from vllm.v1.sample.logits_processor import LogitsProcessor as _V1LogitsProcessor
except Exception:  # vLLM absent (or too old): the vLLM-independent parts above still work
    _V1LogitsProcessor = object  # type: ignore[assignment,misc]
    BatchUpdate = MoveDirectionality = None  # type: ignore[assignment,misc]

try:  # Model Runner V2 interface
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as _V2LogitsProcessor
except Exception:
    _V2LogitsProcessor = object  # type: ignore[assignment,misc]


class ConstrainedLogitsProcessor(_Compiling, _V1LogitsProcessor):
    """vLLM v1 logits processor: rows of requests with `constrained_*` extra args follow their grammar."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self._setup(vllm_config, vllm_config.model_config.get_vocab_size())

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        _validate(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: Any | None) -> None:
        if batch_update is not None:
            for index in batch_update.removed:
                self.batch.remove(index)
            for index, params, _prompt_ids, output_ids in batch_update.added:
                self.batch.remove(index)
                grammar = self._grammar(params)
                if grammar is not None:
                    self.batch.add(index, grammar, output_ids)
            for a, b, direction in batch_update.moved:
                if direction == MoveDirectionality.SWAP:
                    self.batch.swap(a, b)
                else:
                    self.batch.move(a, b)
        self.batch.sync()

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not len(self.batch):
            return logits
        rows = {key: key for key in self.batch.requests if key < logits.shape[0]}
        return self.batch.apply(logits, rows)


class ConstrainedLogitsProcessorV2(_Compiling, _V2LogitsProcessor):
    """The same for Model Runner V2: state per request slot; committed tokens from `req_states`."""

    def __init__(self, vllm_config: Any, req_states: Any) -> None:
        self._setup(vllm_config, req_states.vocab_size)
        self._req_states = req_states

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        _validate(sampling_params)

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        self.batch.remove(req_idx)
        grammar = self._grammar(sampling_params)
        if grammar is None:
            return False
        self.batch.add(req_idx, grammar)
        return True

    def _output_tokens(self, slot: int) -> np.ndarray:
        """Committed output tokens of `slot` (prompt excluded), copied to the host."""
        states = self._req_states
        prompt_len = int(states.prompt_len.np[slot])
        total = states.total_len
        total_len = int(total.np[slot]) if hasattr(total, "np") else int(_tensor(total)[slot].item())
        tokens = _tensor(states.all_token_ids)[slot, prompt_len:total_len]
        return tokens.cpu().numpy()

    def apply(self, logits: torch.Tensor, ctx: Any) -> torch.Tensor:
        if not len(self.batch):
            return logits
        slots = [int(s) for s in ctx.idx_mapping_np if int(s) in self.batch]
        if not slots:
            return logits
        for slot in slots:
            self.batch.sync(slot, self._output_tokens(slot))
        row_slots = ctx.expanded_idx_mapping.cpu().tolist()
        rows = {row: slot for row, slot in enumerate(row_slots) if slot in self.batch}
        return self.batch.apply(logits, rows)


def _tensor(buffer: Any) -> torch.Tensor:
    """The tensor behind one of vLLM's staged / UVA buffers (or the tensor itself)."""
    if isinstance(buffer, torch.Tensor):
        return buffer
    for name in ("gpu", "cpu"):
        value = getattr(buffer, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot read tokens from {type(buffer).__name__}")
