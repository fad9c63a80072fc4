"""API fuzzing of the live server from its own OpenAPI document (schemathesis; issue 19).

Every operation of `/openapi.json` (chat completions, responses, models, health) gets requests generated from
the documented request schema, valid ones (positive) and ones that break it (negative), sent over HTTP to a
real uvicorn server of this module's own, on the random-weight model. Checked on every response: no status
>= 500; every 4xx is an OpenAI-shaped JSON error `{"error": {"message", "type", "param", "code"}}`; negative
data is refused; a 2xx conforms to the documented response schema and content type (schemathesis' own
checks), a stream is data-only SSE of JSON events. After the run the server still answers `/health` and a
chat completion.

Small and deterministic: a fixed example budget per operation and mode, `derandomize=True`, no example
database. Generation stays cheap: positive bodies mostly name the served model (else every one is a 404)
and their token budgets and `n` are capped, so each request decodes a few tokens at most.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from server.app import create_app
from server.serving import build_service
from tests.conftest import TEST_MODEL_ID, LiveServer, free_port

# per operation and generation mode: small in CI; `bench/api_fuzz.py --examples N` runs it large
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
MAX_TOKENS = 4  # cap on generated token budgets: a few decode steps per request
BUDGET_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def live_server(adversary):
    """A server of its own (torch runtime: the HTTP layer is under test, not the model runtime)."""
    service = build_service(adversary, max_batch_size=8)
    try:
        with LiveServer(create_app(service), free_port()) as server:
            yield server
    finally:
        service.engine.shutdown()


@pytest.fixture(scope="module")
def document(live_server) -> dict:
    response = httpx.get(live_server.url + "/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


def unresolved_refs(document: dict) -> list[str]:
    """`$ref`s that do not resolve from the document's root (OpenAPI 3.1: "#" is the whole document)."""
    found: list[str] = []
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                try:
                    resolve_pointer(document, ref[1:])
                except (KeyError, IndexError, ValueError):
                    found.append(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(found))


def resolve_pointer(document: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:] if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def test_openapi_refs_resolve(document: dict) -> None:
    """Every `$ref` of the served OpenAPI document resolves (tools and `/docs` read it from the root)."""
    assert not unresolved_refs(document)


@pytest.fixture(scope="module")
def api(document: dict) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(document)


def operations(api: schemathesis.BaseSchema) -> list[Any]:
    return [result.ok() for result in api.get_all_operations()]


def cheap(case: Any, served: bool) -> None:
    """Cap the work a generated body asks for; name the served model when `served`."""
    body = case.body
    if not isinstance(body, dict):
        return
    if served and isinstance(body.get("model"), str):
        body["model"] = TEST_MODEL_ID
    for name in BUDGET_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
            body[name] = MAX_TOKENS
    if served and isinstance(body.get("n"), int) and body["n"] > 2:  # positive only: n > 128 is a 400
        body["n"] = 2
    if not any(name in body for name in BUDGET_FIELDS):  # default: the room left in the context window
        body["max_tokens" if "messages" in body else "max_output_tokens"] = MAX_TOKENS


def content_type(response: schemathesis.Response) -> str:
    """The response's content type (schemathesis keeps each header as a list of values)."""
    for name, values in response.headers.items():
        if name.lower() == "content-type":
            return values[0] if isinstance(values, list) else values
    return ""


def assert_openai_error(response: schemathesis.Response, case: Any) -> None:
    """A 4xx must be `{"error": {"message", "type", "param", "code"}}` JSON with a non-empty message."""
    where = f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    assert content_type(response).startswith("application/json"), where
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, where
    error = body["error"]
    assert isinstance(error, dict) and set(error) == ERROR_FIELDS, where
    assert isinstance(error["message"], str) and error["message"], where
    assert isinstance(error["type"], str) and error["type"], where
    assert error["param"] is None or isinstance(error["param"], str), where
    assert error["code"] is None or isinstance(error["code"], str), where


def is_stream(response: schemathesis.Response) -> bool:
    return content_type(response).startswith("text/event-stream")


def assert_stream_events(response: schemathesis.Response, case: Any) -> None:
    """A 200 stream (not described by the OpenAPI document): data-only SSE of JSON events."""
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events, response.text[:500]
    for event in events:
        if event != "[DONE]":
            parsed = json.loads(event)
            assert isinstance(parsed, dict), event
            assert "error" not in parsed, f"{case.path}: error event in a stream: {event[:500]}"


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, seen: dict[int, int]) -> None:
    strategy = st.tuples(operation.as_strategy(generation_mode=mode), st.integers(0, 9))

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(drawn: tuple[Any, int]) -> None:
        case, roll = drawn
        cheap(case, served=mode.is_positive and roll < 8)
        response = case.call(base_url=base_url, timeout=120)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        checks = [not_a_server_error] + ([negative_data_rejection] if mode.is_negative else [])
        if response.status_code < 400 and not is_stream(response):
            checks += [content_type_conformance, response_schema_conformance]
        case.validate_response(response, checks=checks)
        if 400 <= response.status_code < 500:
            assert_openai_error(response, case)
        elif is_stream(response):
            assert_stream_events(response, case)

    one()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_openapi_operations(api, live_server, mode: GenerationMode) -> None:
    ops = operations(api)
    paths = {(op.method.upper(), op.path) for op in ops}
    assert {("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("GET", "/v1/models")} <= paths
    seen: dict[int, int] = {}
    for operation in ops:
        if mode.is_negative and operation.method.upper() == "GET":
            continue  # no parameters to break: a negative GET is the positive one
        fuzz_operation(operation, mode, live_server.url, seen)
    print(f"\n{mode.value}: status counts {dict(sorted(seen.items()))}")
    assert not any(status >= 500 for status in seen)
    if mode.is_positive:
        assert seen.get(200, 0) > 0  # the budget reached generation at all
    else:
        assert any(400 <= status < 500 for status in seen)


def test_server_healthy_after_fuzzing(live_server) -> None:
    """Runs after the fuzzing above (file order): the server still serves."""
    assert httpx.get(live_server.url + "/health", timeout=30).json()["status"] == "ok"
    payload = {"model": TEST_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    response = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
