"""Wire a model into a running server: load, build the engine and compiler, start uvicorn.

Contract: `build_service(loaded)` returns a ready `ChatService`; `serve(...)` blocks serving HTTP until
interrupted, then shuts the engine down gracefully.
"""

from __future__ import annotations

import logging

import uvicorn

from constrained.engine import Engine
from constrained.grammar import GrammarCompiler
from constrained.models import LoadedModel, load_model
from constrained.tokenizer_info import TokenizerInfo
from server.app import create_app
from server.chat import ChatService

log = logging.getLogger(__name__)


def build_service(loaded: LoadedModel, *, max_batch_size: int = 32) -> ChatService:
    info = TokenizerInfo.from_huggingface(loaded.tokenizer, int(loaded.model.config.vocab_size))
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=max_batch_size)
    return ChatService(engine, loaded.tokenizer, GrammarCompiler(info), loaded.model_id)


def serve(model: str, host: str, port: int, *, max_batch_size: int = 32) -> None:
    log.info("loading model %s", model)
    service = build_service(load_model(model), max_batch_size=max_batch_size)
    log.info("serving %s on http://%s:%d/v1", service.model_id, host, port)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="info")
    finally:
        service.engine.shutdown()
