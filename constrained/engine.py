"""The decode loop: continuous batching of constrained generation on one model.

Contract:
- `Engine(runtime, tokenizer)` starts one worker thread that owns the `ModelRuntime` (torch or llama.cpp).
  `submit(request, emit)` queues a `GenerationRequest` and returns a `RequestHandle`; the worker calls
  `emit(event)` from its thread with `ChoiceDelta`, `ChoiceFinished`, then one `RequestFinished` (or one
  `RequestFailed`).
- Requests that arrive while others decode join the running batch after their prefill; the `n` choices
  of a request share one prefill; finished or cancelled sequences leave the batch. Every step runs one
  forward pass for the whole batch (the runtime keeps the KV cache), fills the grammar bitmask for every
  row — on a worker thread while the forward pass runs (`overlap_masks`) — and samples all rows with
  `constrained.sampling` as batched torch ops.
- Per-row constraint work is `constrained.row_constraint.RowConstraint` (one per constrained row): its mask,
  the degeneration guard, and the engine's closing policy: no pre-masking; a sampled token that would leave
  no room to finish within `max_tokens` is re-drawn among the closing tokens, batched over those rows.
- Fast-forward (`fast_forward`, on by default): after a sampled token, the tokens the constraint forces next
  (`constrained.fast_forward`) are accepted and emitted at once and fed to the model with it in the next
  forward pass; they count as completion tokens. Requests asking for logprobs are decoded token by token.
- A failure inside one request fails that request only; a failure of the batch forward fails the requests
  in that batch, and the worker keeps serving.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from constrained.bitmask import allocate_bitmask
from constrained.detokenizer import IncrementalText
from constrained.grammar import Grammar
from constrained.reasoning import Reasoning
from constrained.row_constraint import RowConstraint
from constrained.runtimes.base import ModelRuntime
from constrained.sampling import SamplingParams, TokenHistory, sample
from constrained.tokenizer_info import eos_token_ids

log = logging.getLogger(__name__)
_PREFILL_GROUP = 16  # requests prefilled together in one forward pass
_FORCED_LIMIT = 32  # most forced tokens appended to a row in one step


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    grammar: Grammar | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    repeat_limit: int = 32  # degeneration guard: a token cycle repeated this often steers to the closing path
    reasoning: Reasoning | None = None  # think first (free text up to the closing tag, at most its budget)


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class ChoiceDelta:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]


@dataclass
class ChoiceFinished:
    index: int
    finish_reason: str  # "stop" | "length"


@dataclass
class RequestFinished:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class RequestFailed:
    message: str


Event = ChoiceDelta | ChoiceFinished | RequestFinished | RequestFailed


class EngineObserver(Protocol):
    """Receives the engine's measurements (e.g. `server.metrics.Metrics`); called from the engine thread."""

    def observe_mask(self, seconds: float) -> None: ...
    def observe_first_token(self, seconds: float) -> None: ...
    def observe_finished(self, prompt_tokens: int, completion_tokens: int) -> None: ...


class RequestHandle:
    """The caller's side of a submitted request."""

    def __init__(self, request: GenerationRequest, emit: Callable[[Event], None]) -> None:
        self.request = request
        self.emit = emit
        self.cancelled = threading.Event()
        self.choices_left = request.n
        self.completion_tokens = 0
        self.submitted = time.perf_counter()

    def cancel(self) -> None:
        """Stop generating; the slots are freed at the next step and no further events are sent."""
        self.cancelled.set()


@dataclass
class _Sequence:
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


class Engine:
    def __init__(
        self,
        runtime: ModelRuntime,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 32,
        context_window: int | None = None,
        overlap_masks: bool = True,
        fast_forward: bool = True,
    ) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.device = runtime.device
        self.vocab_size = runtime.vocab_size
        self.context_window = min(context_window or runtime.context_window, runtime.context_window)
        self.max_batch_size = max_batch_size
        self.fast_forward = fast_forward
        self.eos_token_ids = eos_token_ids(tokenizer)
        self._queue: queue.Queue[RequestHandle | None] = queue.Queue()
        self._rows: list[_Sequence] = []
        self._history = TokenHistory.empty(self.vocab_size, self.device)
        self._stopping = False
        self.observer: EngineObserver | None = None
        self._mask_worker = ThreadPoolExecutor(1, "constrained-masks") if overlap_masks else None
        self._thread = threading.Thread(target=self._run, name="constrained-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, request: GenerationRequest, emit: Callable[[Event], None]) -> RequestHandle:
        handle = RequestHandle(request, emit)
        if self._stopping:
            self._fail(handle, "the server is shutting down")
        else:
            self._queue.put(handle)
        return handle

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def batch_size(self) -> int:
        return len(self._rows)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Finish the requests in flight, fail the queued ones, stop the worker."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._mask_worker is not None:
            self._mask_worker.shutdown(wait=False)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            try:
                self._admit()
                if self._stopping and not self._rows:
                    self._fail_queued("the server is shutting down")
                    return
                if self._rows:
                    self._decode_step()
            except Exception as exc:  # a batch-wide failure: fail what is in flight, keep serving
                log.exception("decode step failed")
                for seq in self._rows:
                    self._fail(seq.handle, f"internal error during generation: {exc}")
                self._reset_batch()

    def _admit(self) -> None:
        """Take waiting requests while there are free rows, and prefill them together in one forward pass."""
        block = not self._rows
        free = self.max_batch_size - len(self._rows)
        handles: list[RequestHandle] = []
        while free > 0 and len(handles) < _PREFILL_GROUP:
            try:
                handle = self._queue.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                break
            if handle is None:
                self._stopping = True
                break
            block = False
            if not handle.cancelled.is_set():
                handles.append(handle)
                free -= handle.request.n
        if not handles:
            return
        try:
            self._prefill(handles)
        except Exception as exc:
            log.exception("prefill failed")
            for handle in handles:
                self._fail(handle, f"internal error during prefill: {exc}")

    def _fail_queued(self, message: str) -> None:
        while True:
            try:
                handle = self._queue.get_nowait()
            except queue.Empty:
                return
            if handle is not None:
                self._fail(handle, message)

    def _fail(self, handle: RequestHandle, message: str) -> None:
        if not handle.cancelled.is_set():
            handle.cancelled.set()
            handle.emit(RequestFailed(message))

    def _prefill(self, handles: list[RequestHandle]) -> None:
        """One forward pass over the prompts; the n choices of a request share its prompt's KV cache."""
        prompts = [handle.request.prompt_ids for handle in handles]
        logits = self.runtime.prefill(prompts, [handle.request.n for handle in handles])
        rows = [self._new_sequence(handle, i) for handle in handles for i in range(handle.request.n)]
        first_row = len(self._rows)
        history = TokenHistory.from_prompts(
            [seq.handle.request.prompt_ids for seq in rows], self.vocab_size, self.device
        )
        self._rows = self._rows + rows
        self._history = self._history.concat(history)
        if self.observer is not None:
            for handle in handles:
                self.observer.observe_first_token(time.perf_counter() - handle.submitted)
        try:
            tokens, logprobs = self._sample(logits, rows, history, self._masks(rows))
            self._advance(first_row, tokens, logprobs)
        except Exception:
            for seq in rows:
                seq.finished = True
            raise
        finally:
            self._drop_finished()

    def _new_sequence(self, handle: RequestHandle, index: int) -> _Sequence:
        request = handle.request
        generator = torch.Generator(device=self.device)
        seed = request.params.seed
        generator.manual_seed(secrets.randbits(63) if seed is None else (seed * 1_000_003 + index) % 2**63)
        # No closing margin: the engine does not pre-mask near the budget, it re-draws a token over it
        # (`_close_within_budget`).
        grammar, limit = request.grammar, request.repeat_limit
        constraint = RowConstraint(grammar, repeat_limit=limit) if grammar is not None else None
        return _Sequence(handle, index, constraint, generator, IncrementalText(self.tokenizer, request.stop))

    def _decode_step(self) -> None:
        rows = self._rows
        # A row's next mask needs only its state, known since the last step: compute the masks on a worker
        # thread while the forward pass runs (both release the GIL in their compiled parts).
        masks = self._mask_worker.submit(self._masks, rows) if self._mask_worker else None
        try:
            logits = self.runtime.decode([seq.feed for seq in rows])
        finally:
            bitmask = masks.result() if masks else self._masks(rows)
        tokens, logprobs = self._sample(logits, rows, self._history, bitmask)
        self._advance(0, tokens, logprobs)
        self._drop_finished()

    def _masks(self, rows: list[_Sequence]) -> torch.Tensor | None:
        """The grammar bitmask of every row in its current state (None when no row is constrained)."""
        if not any(seq.constraint is not None for seq in rows):
            return None
        start = time.perf_counter()
        bitmask = allocate_bitmask(len(rows), self.vocab_size, device="cpu")
        for i, seq in enumerate(rows):
            if seq.constraint is not None and not seq.finished:
                self._fill_row(seq, bitmask, i)
        if self.observer is not None:
            self.observer.observe_mask(time.perf_counter() - start)
        return bitmask.to(self.device, non_blocking=True)

    def _sample(
        self, logits: torch.Tensor, rows: list[_Sequence], history: TokenHistory, bitmask: torch.Tensor | None
    ) -> tuple[list[int], torch.Tensor | None]:
        want_logprobs = any(seq.handle.request.logprobs for seq in rows)
        result = sample(
            logits,
            [seq.handle.request.params for seq in rows],
            history=history,
            bitmask=bitmask,
            generators=[seq.generator for seq in rows],
            return_logprobs=want_logprobs,
        )
        tokens = result.token_ids.tolist()
        self._close_within_budget(logits, rows, history, tokens, result.logprobs)
        return tokens, result.logprobs

    def _fill_row(self, seq: _Sequence, bitmask: torch.Tensor, row: int) -> None:
        """Fill one row's mask; a grammar failure (e.g. automaton budget exceeded) fails that request only."""
        try:
            seq.constraint.fill(bitmask, row)
        except Exception as exc:
            log.warning("grammar failure: %s", exc)
            self._fail(seq.handle, f"the constraint failed during generation: {exc}")
            seq.finished = True
            bitmask[row] = -1  # any token: the row is dropped after this step

    def _close_within_budget(
        self,
        logits: torch.Tensor,
        rows: list[_Sequence],
        history: TokenHistory,
        tokens: list[int],
        logprobs: torch.Tensor | None,
    ) -> None:
        """Re-draw, among closing tokens, the rows whose token would leave no room to finish the output."""
        redo = [
            i
            for i, (seq, token) in enumerate(zip(rows, tokens, strict=True))
            if self._over_budget(seq, token)
        ]
        if not redo:
            return
        bitmask = allocate_bitmask(len(redo), self.vocab_size, device="cpu")
        for slot, i in enumerate(redo):
            rows[i].constraint.fill_closing(bitmask, slot, self._remaining(rows[i]))
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

    def _over_budget(self, seq: _Sequence, token: int) -> bool:
        if seq.constraint is None or seq.finished:
            return False
        try:
            return not seq.constraint.fits(token, self._remaining(seq))
        except Exception as exc:
            log.warning("budget check failed: %s", exc)
            self._fail(seq.handle, f"the constraint failed during generation: {exc}")
            seq.finished = True
            return False

    @staticmethod
    def _remaining(seq: _Sequence) -> int:
        """Tokens `max_tokens` still allows this sequence, the next one included (the row's constraint
        lowers it further past a degeneration deadline)."""
        return seq.handle.request.max_tokens - seq.generated

    def _advance(self, first_row: int, tokens: list[int], logprobs: torch.Tensor | None) -> None:
        """Feed the sampled tokens to rows first_row.. and emit their events."""
        rows = self._rows[first_row : first_row + len(tokens)]
        token_tensor = torch.tensor(tokens, dtype=torch.long, device=self.device)
        self._history.append(token_tensor, rows=slice(first_row, first_row + len(tokens)))
        for offset, (seq, token) in enumerate(zip(rows, tokens, strict=True)):
            seq.feed = [token]
            if seq.handle.cancelled.is_set():
                seq.finished = True
                continue
            try:
                row_logprobs = logprobs[offset] if logprobs is not None else None
                self._advance_one(seq, token, row_logprobs)
            except Exception as exc:
                log.exception("request failed")
                self._fail(seq.handle, f"internal error: {exc}")
                seq.finished = True

    def _advance_one(self, seq: _Sequence, token: int, logprobs: torch.Tensor | None) -> None:
        request = seq.handle.request
        if seq.constraint is not None and not seq.constraint.accept(token):  # watched by the guard
            raise RuntimeError(f"sampled token {token} is outside the grammar")
        seq.generated += 1
        seq.handle.completion_tokens += 1
        info = []
        if request.logprobs and logprobs is not None:
            top = []
            if request.top_logprobs:
                values, ids = torch.topk(logprobs, request.top_logprobs)
                top = list(zip(ids.tolist(), values.tolist(), strict=True))
            info = [TokenLogprob(token, float(logprobs[token]), top)]
        if token in self.eos_token_ids:
            self._emit_text(seq, seq.text.flush(), [], info)
            self._finish(seq, "stop")
            return
        tokens = [token, *self._fast_forward(seq)]
        seq.feed = tokens
        text = seq.text.push(tokens)
        if request.reasoning is not None and seq.thinking:
            seq.tail = (seq.tail + text)[-4 * len(request.reasoning.close_tag) :]
            seq.thinking = request.reasoning.close_tag not in seq.tail
        self._emit_text(seq, text, tokens, info)
        if seq.text.stopped:
            self._finish(seq, "stop")
        elif seq.generated >= request.max_tokens or self._context_full(seq):
            self._emit_text(seq, seq.text.flush(), [], [])
            self._finish(seq, "length")

    def _fast_forward(self, seq: _Sequence) -> list[int]:
        """Accept the tokens the constraint forces next (none when off, for logprobs requests, or when they
        would leave too few tokens to close the output); they are fed to the model at the next step."""
        request, constraint = seq.handle.request, seq.constraint
        if request.reasoning is not None and seq.thinking:
            return self._close_thinking(seq) if seq.generated >= request.reasoning.budget else []
        if not self.fast_forward or constraint is None or request.logprobs or constraint.is_terminated():
            return []
        room = min(
            request.max_tokens - seq.generated,
            self.context_window - len(request.prompt_ids) - seq.generated,
            _FORCED_LIMIT,
        )
        forced = constraint.forced_tokens(self.tokenizer, room - 1)
        if not forced or not constraint.accept_forced(forced, self._remaining(seq)):
            return []
        seq.generated += len(forced)
        seq.handle.completion_tokens += len(forced)
        return forced

    def _close_thinking(self, seq: _Sequence) -> list[int]:
        """The reasoning budget is spent: append the closing tag (when the grammar takes it here)."""
        request, constraint = seq.handle.request, seq.constraint
        tag = self.tokenizer.encode(request.reasoning.close_tag, add_special_tokens=False)
        if seq.generated + len(tag) >= request.max_tokens:
            return []  # no room: the budget closing will end the output
        if constraint is not None and not constraint.accept_tokens(tag):
            return []  # the model is writing the tag already
        seq.generated += len(tag)
        seq.handle.completion_tokens += len(tag)
        return tag

    def _context_full(self, seq: _Sequence) -> bool:
        return len(seq.handle.request.prompt_ids) + seq.generated >= self.context_window

    def _emit_text(self, seq: _Sequence, text: str, token_ids: list[int], info: list[TokenLogprob]) -> None:
        if text or info:
            seq.handle.emit(ChoiceDelta(seq.index, text, token_ids, info))

    def _finish(self, seq: _Sequence, reason: str) -> None:
        seq.finished = True
        handle = seq.handle
        handle.emit(ChoiceFinished(seq.index, reason))
        handle.choices_left -= 1
        if handle.choices_left == 0:
            handle.emit(RequestFinished(len(handle.request.prompt_ids), handle.completion_tokens))
            if self.observer is not None:
                self.observer.observe_finished(len(handle.request.prompt_ids), handle.completion_tokens)

    # ------------------------------------------------------------------ batch bookkeeping
    def _drop_finished(self) -> None:
        keep = [
            i for i, seq in enumerate(self._rows) if not seq.finished and not seq.handle.cancelled.is_set()
        ]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        self.runtime.keep(keep)
        self._history = self._history.select(torch.tensor(keep, dtype=torch.long, device=self.device))
        self._rows = [self._rows[i] for i in keep]

    def _reset_batch(self) -> None:
        self._rows = []
        self.runtime.reset()
        self._history = TokenHistory.empty(self.vocab_size, self.device)


@dataclass
class Collected:
    texts: list[list[str]]  # per request, per choice
    completion_tokens: int
    failures: list[str]


def collect(engine: Engine, requests: list[GenerationRequest], timeout: float = 300.0) -> Collected:
    """Submit `requests` at once and block until all finish: their texts, token usage and failures
    (`TimeoutError` past `timeout`). For scripts, tests and benchmarks; servers use `submit`."""
    out = Collected([[""] * request.n for request in requests], 0, [])
    left = [len(requests)]
    done = threading.Event()
    lock = threading.Lock()

    def emitter(k: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:
            if isinstance(event, ChoiceDelta):
                out.texts[k][event.index] += event.text
            elif isinstance(event, RequestFinished | RequestFailed):
                with lock:
                    if isinstance(event, RequestFailed):
                        out.failures.append(event.message)
                    else:
                        out.completion_tokens += event.completion_tokens
                    left[0] -= 1
                    if not left[0]:
                        done.set()

        return emit

    for k, request in enumerate(requests):
        engine.submit(request, emitter(k))
    if requests and not done.wait(timeout):
        raise TimeoutError("requests did not finish in time")
    return out
