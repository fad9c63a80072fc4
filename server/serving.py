"""Wire a model into a running server: load, build the engine and compiler, start uvicorn.

Contract: `build_service(loaded)` returns a ready `ChatService`; `serve(...)` blocks serving HTTP until
interrupted, then shuts the engine down gracefully.
"""

from __future__ import annotations

import logging

import uvicorn

from constrained.compile_pool import IsolatedCompiler
from constrained.disk_cache import DiskCache
from constrained.engine import Engine
from constrained.grammar import GrammarCompiler
from constrained.models import LoadedModel, Runtime, cache_dir, load_model
from constrained.reasoning import Reasoning
from constrained.tokenizer_info import TokenizerInfo
from server.app import create_app
from server.chat import ChatService
from server.limits import Limits

log = logging.getLogger(__name__)


def build_service(
    loaded: LoadedModel,
    *,
    max_batch_size: int = 32,
    limits: Limits | None = None,
    fast_forward: bool = True,
    reasoning: Reasoning | None = None,
    disk_cache: DiskCache | None = None,
) -> ChatService:
    """`reasoning`: the model thinks first (a reasoning parser); `fast_forward`: forced tokens not sampled."""
    limits = limits or Limits()
    info = TokenizerInfo.from_huggingface(loaded.tokenizer, loaded.vocab_size)
    runtime = loaded.runtime(max_batch_size)
    engine = Engine(runtime, loaded.tokenizer, max_batch_size=max_batch_size, fast_forward=fast_forward)
    # schema walks and automaton initialisation run in worker processes, under the compile budget: a heavy
    # or hostile schema is refused there and never holds the decode loop's GIL
    isolated = IsolatedCompiler(max_states=limits.max_automaton_states)
    compiler = GrammarCompiler(
        info, max_states=limits.max_automaton_states, compile_schema=isolated, disk_cache=disk_cache
    )
    return ChatService(
        engine,
        loaded.tokenizer,
        compiler,
        loaded.model_id,
        compile_timeout_s=limits.compile_timeout_s,
        request_timeout_s=limits.request_timeout_s,
        reasoning=reasoning,
    )


def serve(
    model: str,
    host: str,
    port: int,
    *,
    runtime: Runtime = "auto",
    max_batch_size: int = 32,
    limits: Limits | None = None,
    api_key: str | None = None,
    fast_forward: bool = True,
    reasoning: Reasoning | None = None,
) -> None:
    """Serve until interrupted; on SIGINT/SIGTERM uvicorn stops accepting, in-flight requests finish."""
    limits = limits or Limits()
    loaded = load_model(model, runtime=runtime)
    log.info("loaded model %s on the %s runtime", model, loaded.runtime_name)
    service = build_service(
        loaded,
        max_batch_size=max_batch_size,
        limits=limits,
        fast_forward=fast_forward,
        reasoning=reasoning,
        disk_cache=DiskCache(cache_dir() / "schemas"),  # a restart does not walk known schemas again
    )
    log.info(
        "serving %s on http://%s:%d/v1%s", service.model_id, host, port, " (API key required)" * bool(api_key)
    )
    try:
        uvicorn.run(create_app(service, limits, api_key), host=host, port=port, log_level="info")
    finally:
        service.engine.shutdown()
        service.compiler.compile_schema.close()
