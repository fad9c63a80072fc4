"""vLLM adapter: serve with our constraints through vLLM (continuous batching, tensor parallel, replicas).

vLLM has no registry for third-party structured-output backends (`structured_outputs_config.backend` is a
fixed list: xgrammar, guidance, outlines, lm-format-enforcer), so the adapter is a **custom logits
processor**, vLLM v1's supported extension point:

    vllm serve MODEL --logits-processors constrained.vllm_backend:ConstrainedLogitsProcessor

(or `LLM(model=..., logits_processors=[ConstrainedLogitsProcessor])`). A request opts in through
`vllm_xargs` (OpenAI SDK: `extra_body={"vllm_xargs": {...}}`; offline: `SamplingParams.extra_args`); values
are strings because `vllm_xargs` only carries scalars:

- `constrained_schema`: a JSON Schema as JSON text (what `response_format.json_schema.schema` holds);
- `constrained_json_object`: any non-empty value = any JSON object (`response_format: json_object`);
- `constrained_regex`: a regular expression the whole output must match;
- `constrained_grammar`: a context-free grammar the output must derive from, in Lark syntax (vLLM's
  `structured_outputs.grammar`) or GBNF with `constrained_grammar_syntax: "gbnf"`;
- `constrained_tools`: the OpenAI `tools` list as JSON text, with `constrained_tool_choice` ("auto",
  "required" or a function name; default "auto") and `constrained_parallel_tool_calls` ("true"/"false",
  default "true"): the Hermes `<tool_call>` grammar of `constrained.constraints.Tools` ("none" leaves the
  output unconstrained). Send the same `tools` to vLLM with `tool_choice: "none"` so its chat template puts
  them in the prompt without vLLM constraining anything.

Do not also send vLLM's own `response_format` / `structured_outputs` for the same request: its backend would
intersect its grammar with ours. `constrained.vllm_backend.xargs_for(response_format=..., tools=...)` builds
the `vllm_xargs` from OpenAI-shaped arguments.

Contract:
- `spec_from_extra_args` reads a request's `ConstraintSpec`; `ConstraintSpec.constraint()` is its
  `constrained.constraints` value, through which it is checked (`check`, at admission) and compiled
  (`compile`), exactly as the server's constraints are.
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
- `ConstrainedStructuredOutputGrammar` implements vLLM's `StructuredOutputGrammar` (accept_tokens,
  validate_tokens, rollback, fill_bitmask, is_terminated, reset) over a `RowConstraint`, for a vLLM build that
  registers a backend (none of the public ones does today).
Each vLLM worker process (one per tensor-parallel rank, per replica) builds its own compiler; grammars are
cached per process, so every rank computes identical masks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from constrained.bitmask import allocate_bitmask, apply_bitmask_
from constrained.constraints import (
    TOOL_CHOICES,
    Constraint,
    JsonObject,
    JsonSchema,
    Regex,
    TextGrammar,
    Tools,
    ToolSpec,
)
from constrained.grammar import GRAMMAR_SYNTAXES, Grammar, GrammarCompiler, Matcher
from constrained.row_constraint import RowConstraint

logger = logging.getLogger(__name__)

XARG_SCHEMA = "constrained_schema"
XARG_JSON_OBJECT = "constrained_json_object"
XARG_REGEX = "constrained_regex"
XARG_GRAMMAR = "constrained_grammar"
XARG_GRAMMAR_SYNTAX = "constrained_grammar_syntax"
XARG_TOOLS = "constrained_tools"
XARG_TOOL_CHOICE = "constrained_tool_choice"
XARG_PARALLEL = "constrained_parallel_tool_calls"
XARGS = (
    XARG_SCHEMA,
    XARG_JSON_OBJECT,
    XARG_REGEX,
    XARG_GRAMMAR,
    XARG_GRAMMAR_SYNTAX,
    XARG_TOOLS,
    XARG_TOOL_CHOICE,
    XARG_PARALLEL,
)


# ------------------------------------------------------------------------------------------ request specs
@dataclass(frozen=True)
class ConstraintSpec:
    """What one request asks for, parsed from its `extra_args` (`vllm_xargs`)."""

    kind: str  # "json_schema" | "json_object" | "regex" | "grammar" | "tools"
    source: str  # JSON text of the schema / the tools, the regex, or the grammar text
    tool_choice: str = "auto"
    parallel: bool = True
    syntax: str = "lark"  # of a grammar: "lark" | "gbnf"

    def constraint(self) -> Constraint:
        """The constraint layer's value of this spec (`ValueError` for malformed tools)."""
        if self.kind == "json_schema":
            return JsonSchema(json.loads(self.source))
        if self.kind == "json_object":
            return JsonObject()
        if self.kind == "regex":
            return Regex(self.source)
        if self.kind == "grammar":
            return TextGrammar(self.source, self.syntax)
        tools = tuple(ToolSpec.from_openai(t, i) for i, t in enumerate(json.loads(self.source)))
        if self.tool_choice in TOOL_CHOICES:
            return Tools(tools, choice=self.tool_choice, parallel=self.parallel)
        return Tools(tools, function=self.tool_choice, parallel=self.parallel)

    def compile(self, compiler: GrammarCompiler) -> Grammar | None:
        """The grammar (None: the output is not constrained, tool_choice "none")."""
        return self.constraint().compile(compiler)

    def check(self) -> None:
        """What needs no tokenizer (schema → rules, grammar text → rules, tools), raising a ValueError
        naming the problem."""
        self.constraint().check()


def spec_from_extra_args(extra_args: Mapping[str, Any] | None) -> ConstraintSpec | None:
    """The request's constraint, or None when it has none; ValueError for malformed arguments."""
    if not extra_args:
        return None
    kinds = (XARG_SCHEMA, XARG_JSON_OBJECT, XARG_REGEX, XARG_GRAMMAR, XARG_TOOLS)
    given = [key for key in kinds if extra_args.get(key)]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(f"give at most one of {', '.join(given)}")
    key = given[0]
    value = extra_args[key]
    if key == XARG_JSON_OBJECT:
        return ConstraintSpec("json_object", "")
    if key == XARG_REGEX:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        return ConstraintSpec("regex", value)
    if key == XARG_GRAMMAR:
        syntax = extra_args.get(XARG_GRAMMAR_SYNTAX) or "lark"
        if not isinstance(value, str) or syntax not in GRAMMAR_SYNTAXES:
            raise ValueError(f"{key} must be a string and {XARG_GRAMMAR_SYNTAX} 'lark' or 'gbnf'")
        return ConstraintSpec("grammar", value, syntax=syntax)
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON: {exc}") from None
    if key == XARG_SCHEMA:
        if not isinstance(parsed, dict | bool):
            raise ValueError(f"{key} must be a JSON Schema (an object or a boolean)")
        return ConstraintSpec("json_schema", json.dumps(parsed))  # key order kept: it is the output order
    if not isinstance(parsed, list) or not parsed:
        raise ValueError(f"{key} must be a non-empty list of tools")
    choice = str(extra_args.get(XARG_TOOL_CHOICE) or "auto")
    parallel = str(extra_args.get(XARG_PARALLEL, "true")).lower() not in ("false", "0", "no")
    return ConstraintSpec("tools", json.dumps(parsed), choice, parallel)


def xargs_for(
    *,
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    parallel_tool_calls: bool = True,
    grammar: str | None = None,
    grammar_syntax: str = "lark",
) -> dict[str, str]:
    """`vllm_xargs` for OpenAI-shaped `response_format` / `tools`, or a `grammar` in `grammar_syntax`
    ("lark", as vLLM's `structured_outputs.grammar`, or "gbnf") (client side; no vLLM needed)."""
    xargs: dict[str, str] = {}
    if grammar is not None:
        TextGrammar(grammar, grammar_syntax)  # ValueError for an unknown syntax
        xargs[XARG_GRAMMAR] = grammar
        xargs[XARG_GRAMMAR_SYNTAX] = grammar_syntax
    elif tools:
        xargs[XARG_TOOLS] = json.dumps(list(tools))
        if isinstance(tool_choice, Mapping):
            tool_choice = tool_choice["function"]["name"]
        xargs[XARG_TOOL_CHOICE] = tool_choice or "auto"
        xargs[XARG_PARALLEL] = "true" if parallel_tool_calls else "false"
    elif response_format is not None:
        kind = response_format.get("type")
        if kind == "json_schema":
            xargs[XARG_SCHEMA] = json.dumps(response_format["json_schema"]["schema"])
        elif kind == "json_object":
            xargs[XARG_JSON_OBJECT] = "1"
        elif kind != "text":
            raise ValueError(f"unknown response_format type {kind!r}")
    return xargs


# ------------------------------------------------------------------------------------------ the batch
class RequestConstraint:
    """One request's `RowConstraint` and how far into vLLM's list of its output tokens it has read."""

    def __init__(self, constraint: RowConstraint, output_token_ids: Sequence[int] | None = None) -> None:
        self.constraint = constraint
        self.output_token_ids = output_token_ids  # vLLM's live list of the request's output tokens

    @property
    def matcher(self) -> Matcher:
        return self.constraint.matcher

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


# ------------------------------------------------------------------------------------------ backend shape
try:
    from vllm.v1.structured_output.backend_types import StructuredOutputGrammar as _SOGrammar
except Exception:
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
