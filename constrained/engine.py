"""The decode loop: continuous batching of constrained generation on one model.

Contract:
- `Engine(runtime, tokenizer)` starts one worker thread that owns the `ModelRuntime` (torch or llama.cpp).
  `submit(request, emit)` queues a `GenerationRequest` and returns a `RequestHandle`; the worker calls
  `emit(event)` from its thread with `ChoiceDelta`, `ChoiceFinished`, then one `RequestFinished` (or one
  `RequestFailed`). These types live in `constrained.generation` and are re-exported here.
- Requests that arrive while others decode join the running batch (`constrained.batch`) after their prefill,
  up to `max_batch_size` rows; finished or cancelled sequences leave the batch. Every step runs one forward
  pass for the whole batch, fills the grammar bitmask for every row — on a worker thread while the forward
  pass runs (`overlap_masks`) — and samples all rows as batched torch ops.
- What a step allows each row — its mask, re-drawing a token over the `max_tokens` budget among the closing
  tokens, fast-forward (`fast_forward`, on by default; not for requests asking for logprobs), closing the
  reasoning, the context window — is `constrained.step_policy.StepPolicy`, over the rows'
  `constrained.row_constraint.RowConstraint`s.
- A failure inside one request fails that request only; a failure of the batch forward fails the requests
  in that batch, and the worker keeps serving.
- `collect(engine, requests)` submits requests and blocks until they finish (scripts, tests, benchmarks).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from constrained.batch import Batch, BatchRow
from constrained.generation import (
    ChoiceDelta,
    ChoiceFinished,
    EngineObserver,
    Event,
    GenerationRequest,
    RequestFailed,
    RequestFinished,
    RequestHandle,
    TokenLogprob,
)
from constrained.runtimes.base import ModelRuntime
from constrained.step_policy import StepPolicy
from constrained.tokenizer_info import eos_token_ids

__all__ = [
    "ChoiceDelta",
    "ChoiceFinished",
    "Collected",
    "Engine",
    "EngineObserver",
    "Event",
    "GenerationRequest",
    "RequestFailed",
    "RequestFinished",
    "RequestHandle",
    "TokenLogprob",
    "collect",
]

log = logging.getLogger(__name__)
_PREFILL_GROUP = 16  # requests prefilled together in one forward pass


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
        self.eos_token_ids = eos_token_ids(tokenizer)
        self._queue: queue.Queue[RequestHandle | None] = queue.Queue()
        self._batch = Batch(runtime, tokenizer)
        self._policy = StepPolicy(
            tokenizer,
            vocab_size=self.vocab_size,
            device=self.device,
            context_window=self.context_window,
            fast_forward=fast_forward,
        )
        self._stopping = False
        self.observer: EngineObserver | None = None
        self._mask_worker = ThreadPoolExecutor(1, "constrained-masks") if overlap_masks else None
        self._thread = threading.Thread(target=self._run, name="constrained-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, request: GenerationRequest, emit: Callable[[Event], None]) -> RequestHandle:
        handle = RequestHandle(request, emit)
        if self._stopping:
            handle.fail("the server is shutting down")
        else:
            self._queue.put(handle)
        return handle

    @property
    def fast_forward(self) -> bool:
        """Whether forced tokens are fast-forwarded (may be switched between requests)."""
        return self._policy.fast_forward

    @fast_forward.setter
    def fast_forward(self, on: bool) -> None:
        self._policy.fast_forward = on

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def batch_size(self) -> int:
        return len(self._batch.rows)

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
                if self._stopping and not self._batch.rows:
                    self._fail_queued("the server is shutting down")
                    return
                if self._batch.rows:
                    self._decode_step()
            except Exception as exc:  # a batch-wide failure: fail what is in flight, keep serving
                log.exception("decode step failed")
                for row in self._batch.rows:
                    row.handle.fail(f"internal error during generation: {exc}")
                self._batch.reset()

    def _admit(self) -> None:
        """Take waiting requests while there are free rows, and prefill them together in one forward pass."""
        block = not self._batch.rows
        free = self.max_batch_size - len(self._batch.rows)
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
                handle.fail(f"internal error during prefill: {exc}")

    def _fail_queued(self, message: str) -> None:
        while True:
            try:
                handle = self._queue.get_nowait()
            except queue.Empty:
                return
            if handle is not None:
                handle.fail(message)

    def _prefill(self, handles: list[RequestHandle]) -> None:
        """Admit the requests into the batch (one prefill pass) and emit their first tokens."""
        admitted = self._batch.admit(handles)
        if self.observer is not None:
            for handle in handles:
                self.observer.observe_first_token(time.perf_counter() - handle.submitted)
        try:
            rows = admitted.rows
            tokens, logprobs = self._policy.sample(admitted.logits, rows, admitted.history, self._masks(rows))
            self._advance(admitted.first_row, tokens, logprobs)
        except Exception:
            for row in admitted.rows:
                row.finished = True
            raise
        finally:
            self._batch.drop_finished()

    def _decode_step(self) -> None:
        rows = self._batch.rows
        # A row's next mask needs only its state, known since the last step: compute the masks on a worker
        # thread while the forward pass runs (both release the GIL in their compiled parts); no hand-off
        # when no row is constrained.
        constrained = any(row.constraint is not None for row in rows)
        masks = self._mask_worker.submit(self._masks, rows) if self._mask_worker and constrained else None
        try:
            logits = self._batch.decode()
        finally:
            bitmask = masks.result() if masks else self._masks(rows) if constrained else None
        tokens, logprobs = self._policy.sample(logits, rows, self._batch.history, bitmask)
        self._advance(0, tokens, logprobs)
        self._batch.drop_finished()

    def _masks(self, rows: list[BatchRow]) -> torch.Tensor | None:
        """The rows' grammar bitmask on the model's device (None when no row is constrained), timed."""
        start = time.perf_counter()
        bitmask = self._policy.masks(rows)
        if bitmask is None:
            return None
        if self.observer is not None:
            self.observer.observe_mask(time.perf_counter() - start)
        return bitmask.to(self.device, non_blocking=True)

    def _advance(self, first_row: int, tokens: list[int], logprobs: torch.Tensor | None) -> None:
        """Feed the sampled tokens to rows first_row.. and emit their events."""
        rows = self._batch.rows[first_row : first_row + len(tokens)]
        self._batch.record(first_row, tokens)
        for offset, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            row.feed = [token]
            if row.handle.cancelled.is_set():
                row.finished = True
                continue
            try:
                row_logprobs = logprobs[offset] if logprobs is not None else None
                self._advance_one(row, token, row_logprobs)
            except Exception as exc:
                log.exception("request failed")
                row.handle.fail(f"internal error: {exc}")
                row.finished = True

    def _advance_one(self, row: BatchRow, token: int, logprobs: torch.Tensor | None) -> None:
        request = row.handle.request
        if row.constraint is not None and not row.constraint.accept(token):  # watched by the guard
            raise RuntimeError(f"sampled token {token} is outside the grammar")
        row.count_generated(1)
        info = []
        if request.logprobs and logprobs is not None:
            top = []
            if request.top_logprobs:
                values, ids = torch.topk(logprobs, request.top_logprobs)
                top = list(zip(ids.tolist(), values.tolist(), strict=True))
            info = [TokenLogprob(token, float(logprobs[token]), top)]
        if token in self.eos_token_ids:
            self._emit_text(row, row.text.flush(), [], info)
            self._finish(row, "stop")
            return
        tokens = [token, *self._policy.append_forced(row)]
        row.feed = tokens
        text = row.text.push(tokens)
        row.watch_thinking(text)
        self._emit_text(row, text, tokens, info)
        if row.text.stopped:
            self._finish(row, "stop")
        elif row.generated >= request.max_tokens or self._policy.context_full(row):
            self._emit_text(row, row.text.flush(), [], [])
            self._finish(row, "length")

    @staticmethod
    def _emit_text(row: BatchRow, text: str, token_ids: list[int], info: list[TokenLogprob]) -> None:
        if text or info:
            row.handle.emit(ChoiceDelta(row.index, text, token_ids, info))

    def _finish(self, row: BatchRow, reason: str) -> None:
        row.finished = True
        handle = row.handle
        handle.emit(ChoiceFinished(row.index, reason))
        handle.choices_left -= 1
        if handle.choices_left == 0:
            handle.emit(RequestFinished(len(handle.request.prompt_ids), handle.completion_tokens))
            if self.observer is not None:
                self.observer.observe_finished(len(handle.request.prompt_ids), handle.completion_tokens)


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
