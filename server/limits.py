"""Request limits and the optional API key, checked before any work is queued.

Contract: `Limits` holds the bounds (body size, messages, schema size, queue length, compile budget, request
timeout); `check_request(request, limits)` raises an OpenAI-shaped `APIError` naming the parameter for a
request that exceeds them; `check_api_key(header, key)` raises 401 unless the `Authorization: Bearer` key
matches (no key configured: everything passes).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from server.errors import APIError
from server.protocol import ChatCompletionRequest


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 1024
    max_schema_bytes: int = 256 * 1024
    max_queue: int = 256
    compile_timeout_s: float = 30.0
    max_automaton_states: int = 200_000
    request_timeout_s: float = 900.0


def check_body_size(size: int, limits: Limits) -> None:
    if size > limits.max_body_bytes:
        raise APIError(
            f"the request body is {size} bytes; the limit is {limits.max_body_bytes}",
            status=413,
            code="request_too_large",
        )


def check_request(request: ChatCompletionRequest, limits: Limits) -> None:
    if len(request.messages) > limits.max_messages:
        raise APIError(
            f"{len(request.messages)} messages; the limit is {limits.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    schemas = []
    if request.response_format is not None and request.response_format.json_schema is not None:
        schemas.append(("response_format.json_schema.schema", request.response_format.json_schema.schema_))
    for i, tool in enumerate(getattr(request, "tools", None) or []):
        schemas.append((f"tools[{i}].function.parameters", tool.function.parameters))
    for param, schema in schemas:
        size = len(json.dumps(schema))
        if size > limits.max_schema_bytes:
            raise APIError(
                f"the schema is {size} bytes; the limit is {limits.max_schema_bytes}",
                param=param,
                code="schema_too_large",
            )


def check_queue(depth: int, limits: Limits) -> None:
    if depth >= limits.max_queue:
        raise APIError(
            f"the server is at capacity ({depth} requests waiting); retry shortly",
            status=429,
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": "1"},
        )


def check_api_key(authorization: str | None, key: str | None) -> None:
    if not key:
        return
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise APIError(
            "Incorrect API key provided."
            if given
            else "Missing API key: send 'Authorization: Bearer <key>'.",
            status=401,
            code="invalid_api_key",
        )
