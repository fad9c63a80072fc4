"""What a caller exchanges with the engine: the request, the events it produces, the handle on it.

Contract:
- `GenerationRequest`: the prompt's token ids, `max_tokens`, sampling, `n` choices, an optional grammar, stop
  strings, logprobs, the degeneration guard's `repeat_limit` and an optional reasoning phase.
- Events (`Event`), sent in this order for each request: `ChoiceDelta`s (text, token ids, `TokenLogprob`s),
  one `ChoiceFinished` per choice, then one `RequestFinished`; or, from any point on, one `RequestFailed`
  and nothing after it.
- `RequestHandle`: the caller's side of a submitted request (`cancel()`), and the per-request state the
  engine keeps: choices still running, completion tokens so far, submission time. `fail(message)` sends the
  one `RequestFailed` unless the request was cancelled or has failed already.
- `EngineObserver`: the measurements the engine reports (e.g. `server.metrics.Metrics`), from its thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from constrained.grammar import Grammar
from constrained.reasoning import Reasoning
from constrained.sampling import SamplingParams


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
    limit: bool = False  # its constraint ran past an automaton budget: the request's fault, not the server's


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

    def fail(self, message: str, *, limit: bool = False) -> None:
        """Send `RequestFailed(message, limit)` and stop the request, unless it is cancelled (or failed)
        already."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self.emit(RequestFailed(message, limit))
