"""Request limits and the optional API key, checked before any work is queued.

Contract: `Limits` holds the bounds (body size, JSON nesting depth, messages, schema size, queue length,
compile budget, request timeout); `check_body_depth(body, limits)` (on the raw bytes, before parsing) and
`check_request(request, limits)` raise an OpenAI-shaped `APIError` naming the parameter for a request that
exceeds them; `check_api_key(header, key)` raises 401 unless the `Authorization: Bearer` key
matches (no key configured: everything passes).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from server.errors import APIError
from server.nesting import Structure
from server.protocol import ChatCompletionRequest


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 1024
    max_schema_bytes: int = 256 * 1024
    max_json_depth: int = 128  # nested arrays/objects in the body; real-world schemas nest < 64 (+5 around)
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


def check_body_depth(body: bytes, limits: Limits) -> None:
    """Refuse a body nested deeper than `max_json_depth`, before any recursive parser or validator sees it."""
    structure = Structure.of(body)
    if structure.max_depth <= limits.max_json_depth:
        return
    path = structure.path_to_depth(limits.max_json_depth)
    pointer = "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in path)
    raise APIError(
        f"the request JSON nests {structure.max_depth} levels deep (at '{pointer}'); "
        f"the limit is max_json_depth={limits.max_json_depth}",
        param=_param_of(path),
        code="json_too_deep",
    )


def _param_of(path: list[str]) -> str | None:
    """The request parameter that holds `path`: a schema's own parameter, else the top-level field."""
    if path[:3] == ["response_format", "json_schema", "schema"]:
        return "response_format.json_schema.schema"
    if path[:1] == ["tools"] and path[2:4] == ["function", "parameters"]:
        return f"tools[{path[1]}].function.parameters"
    if path[:2] == ["structured_outputs", "json"]:
        return "structured_outputs.json"
    return path[0] if path else None


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
