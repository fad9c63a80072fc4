"""Prometheus metrics for the server (`GET /metrics`), one registry per app.

Contract: `Metrics` holds the counters/gauges/histograms the issue lists — requests by status, tokens in and
out, queue depth, batch size, grammar compile cache hits/misses, compile and mask timings, time to first
token — and `render()` returns the Prometheus text exposition, reading live gauges at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "constrained_requests", "Chat completion requests by HTTP status", ["status"], registry=r
        )
        self.prompt_tokens = Counter("constrained_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter(
            "constrained_completion_tokens", "Completion tokens generated", registry=r
        )
        self.queue_depth = Gauge("constrained_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.batch_size = Gauge("constrained_batch_size", "Sequences in the running batch", registry=r)
        self.cache_hits = Gauge("constrained_grammar_cache_hits", "Grammar compile cache hits", registry=r)
        self.cache_misses = Gauge(
            "constrained_grammar_cache_misses", "Grammar compile cache misses", registry=r
        )
        self.compile_seconds = Histogram(
            "constrained_compile_seconds", "Grammar compile time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.mask_seconds = Histogram(
            "constrained_mask_seconds",
            "Time to fill the grammar bitmask of one batch step",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 1),
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "constrained_time_to_first_token_seconds",
            "Time to first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def bind(self, *, queue_depth: Callable[[], float], batch_size: Callable[[], float], cache) -> None:
        """Read live values at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.batch_size.set_function(batch_size)
        self.cache_hits.set_function(lambda: cache.hits)
        self.cache_misses.set_function(lambda: cache.misses)

    # The engine's observer interface (called from the engine thread).
    def observe_mask(self, seconds: float) -> None:
        self.mask_seconds.observe(seconds)

    def observe_first_token(self, seconds: float) -> None:
        self.ttft_seconds.observe(seconds)

    def observe_finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
