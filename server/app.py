"""The FastAPI application: routes only; the work is in `server.chat` and `constrained.engine`.

Contract: `create_app(service, limits, api_key)` serves `POST /v1/chat/completions`, `POST /v1/responses`
(translated onto the chat path by `server.responses`), `GET /v1/models`,
`GET /health` and `GET /metrics` (Prometheus), with OpenAI-shaped errors for every failure (see
`server.errors`); `/v1/*` requires `Authorization: Bearer <api_key>` when a key is set.
"""

from __future__ import annotations

import json
import math
from typing import TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from server.chat import ChatService
from server.errors import APIError, install_error_handlers
from server.limits import Limits, check_api_key, check_body_depth, check_body_size, check_queue, check_request
from server.metrics import Metrics
from server.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from server.responses import ResponseObject, ResponsesRequest, ResponsesService

RequestModel = TypeVar("RequestModel", bound=BaseModel)


def _request_body(model: type[BaseModel], path: str) -> dict:
    """The OpenAPI request body of POST `path`: `model`'s schema, its `$defs` referenced from the root."""
    escaped = path.replace("~", "~0").replace("/", "~1")
    template = f"#/paths/{escaped}/post/requestBody/content/application~1json/schema/$defs/{{model}}"
    schema = model.model_json_schema(ref_template=template)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def create_app(service: ChatService, limits: Limits | None = None, api_key: str | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="constrained", version="0.1.0", summary="Schema-guaranteed JSON, OpenAI-compatible.")
    install_error_handlers(app)
    app.state.service = service
    metrics = Metrics()
    metrics.bind(
        queue_depth=lambda: service.engine.queue_depth,
        batch_size=lambda: service.engine.batch_size,
        cache=service.compiler,
    )
    service.engine.observer = metrics
    service.compiler.on_compiled = metrics.compile_seconds.observe

    async def authorized(authorization: str | None = Header(default=None, include_in_schema=False)) -> None:
        check_api_key(authorization, api_key)

    @app.middleware("http")
    async def count_requests(raw: Request, call_next):
        response = await call_next(raw)
        if raw.url.path == "/v1/chat/completions":
            metrics.requests.labels(status=str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": service.model_id}

    @app.get("/v1/models", response_model=ModelList, dependencies=[Depends(authorized)])
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=service.model_id, created=service.created)])

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        dependencies=[Depends(authorized)],
        openapi_extra=_request_body(ChatCompletionRequest, "/v1/chat/completions"),
    )
    async def chat_completions(raw: Request):
        request = await _parse(raw, limits)
        check_request(request, limits)
        check_queue(service.engine.queue_depth, limits)
        prepared = await service.prepare(request)
        if request.stream:
            return StreamingResponse(
                service.stream(prepared),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await service.complete(prepared, raw.is_disconnected)

    responses_service = ResponsesService(service)

    @app.post(
        "/v1/responses",
        response_model=ResponseObject,
        dependencies=[Depends(authorized)],
        openapi_extra=_request_body(ResponsesRequest, "/v1/responses"),
    )
    async def responses(raw: Request):
        request = await _parse(raw, limits, ResponsesRequest)
        check_queue(service.engine.queue_depth, limits)
        prepared = await responses_service.prepare(request, limits)
        if request.stream:
            return StreamingResponse(
                responses_service.stream(prepared),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await responses_service.create(prepared, raw.is_disconnected)

    return app


def _no_constant(name: str) -> float:
    """Python's json reads NaN, Infinity and -Infinity; JSON has no such numbers (RFC 8259)."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number as a float, unless it overflows (`1e400` would become inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


async def _parse(
    raw: Request, limits: Limits, model: type[RequestModel] = ChatCompletionRequest
) -> RequestModel:
    """Parse the body ourselves so that invalid JSON and schema violations share one error path."""
    declared = raw.headers.get("content-length")
    if declared is not None and declared.isdigit():
        check_body_size(int(declared), limits)
    body = bytearray()
    async for part in raw.stream():
        body += part
        check_body_size(len(body), limits)
    check_body_depth(bytes(body), limits)  # json.loads and the validators below recurse
    try:
        payload = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and the two hooks' ValueError
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": str(exc)}]) from None
    except RecursionError:  # unreachable after check_body_depth, kept as a guard: a 400, never a 500
        raise APIError(
            f"the request JSON nests too deep; the limit is max_json_depth={limits.max_json_depth}",
            code="json_too_deep",
        ) from None
    if not isinstance(payload, dict):
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "the body must be a JSON object"}]
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
