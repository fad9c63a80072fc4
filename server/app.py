"""The FastAPI application: routes only; the work is in `server.chat` and `constrained.engine`.

Contract: `create_app(service)` serves `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, with
OpenAI-shaped errors for every failure (see `server.errors`).
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from server.chat import ChatService
from server.errors import install_error_handlers
from server.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList


def create_app(service: ChatService) -> FastAPI:
    app = FastAPI(title="constrained", version="0.1.0", summary="Schema-guaranteed JSON, OpenAI-compatible.")
    install_error_handlers(app)
    app.state.service = service

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": service.model_id}

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=service.model_id, created=service.created)])

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}},
            }
        },
    )
    async def chat_completions(raw: Request):
        request = await _parse(raw)
        generation = await service.prepare(request)
        if request.stream:
            return StreamingResponse(
                service.stream(request, generation),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await service.complete(request, generation)

    return app


async def _parse(raw: Request) -> ChatCompletionRequest:
    """Parse the body ourselves so that invalid JSON and schema violations share one error path."""
    body = await raw.body()
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": str(exc)}]) from None
    if not isinstance(payload, dict):
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "the body must be a JSON object"}]
        )
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
