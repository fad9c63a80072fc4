"""Serving limits, API key, metrics: clear OpenAI-shaped errors, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest

from server.app import create_app
from server.limits import Limits
from tests.conftest import TEST_MODEL_ID, LiveServer, free_port

PAYLOAD = {"model": TEST_MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def guarded(adversary_service):
    limits = Limits(max_body_bytes=20_000, max_messages=3, max_schema_bytes=500, max_queue=64)
    with LiveServer(create_app(adversary_service, limits, api_key="sekret"), free_port()) as server:
        yield server


def post(server, payload, key="sekret", **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        server.url + "/v1/chat/completions", json=payload, headers=headers, timeout=60, **kwargs
    )


@pytest.mark.parametrize("key", [None, "wrong"])
def test_api_key_required(guarded, key):
    response = post(guarded, PAYLOAD, key=key)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert post(guarded, PAYLOAD).status_code == 200
    assert httpx.get(guarded.url + "/v1/models").status_code == 401


def test_body_too_large_is_413(guarded):
    response = post(guarded, {**PAYLOAD, "messages": [{"role": "user", "content": "x" * 30_000}]})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_too_many_messages(guarded):
    response = post(guarded, {**PAYLOAD, "messages": [{"role": "user", "content": "hi"}] * 4})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


def test_schema_too_large(guarded):
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(60)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}
    response = post(guarded, {**PAYLOAD, "response_format": fmt})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": response.json()["error"]["message"],
        "type": "invalid_request_error",
        "param": "response_format.json_schema.schema",
        "code": "schema_too_large",
    }


def test_queue_full_is_429(adversary_service):
    with LiveServer(create_app(adversary_service, Limits(max_queue=0)), free_port()) as server:
        response = post(server, PAYLOAD, key=None)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_metrics_count_requests_and_tokens(guarded):
    fmt = {"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": "boolean"}}}
    assert post(guarded, {**PAYLOAD, "response_format": fmt, "max_tokens": 5}).status_code == 200
    text = httpx.get(guarded.url + "/metrics").text
    for name in (
        'constrained_requests_total{status="200"}',
        "constrained_prompt_tokens_total",
        "constrained_completion_tokens_total",
        "constrained_queue_depth",
        "constrained_batch_size",
        "constrained_grammar_cache_hits",
        "constrained_grammar_cache_misses",
        "constrained_compile_seconds_count",
        "constrained_mask_seconds_count",
        "constrained_time_to_first_token_seconds_count",
    ):
        assert name in text, name
    completion = next(
        line for line in text.splitlines() if line.startswith("constrained_completion_tokens_total ")
    )
    assert float(completion.split()[1]) >= 1


def test_request_timeout_is_504_and_frees_the_slot(adversary_service):
    original = adversary_service.request_timeout_s
    adversary_service.request_timeout_s = 0.5
    try:
        with LiveServer(create_app(adversary_service), free_port()) as server:
            slow = {**PAYLOAD, "max_tokens": 3000, "logit_bias": {"2": -100}}
            response = post(server, slow, key=None)
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "request_timeout"
            assert wait_until_idle(adversary_service)
    finally:
        adversary_service.request_timeout_s = original


def test_stream_disconnect_frees_the_slot(live_server, adversary_service):
    payload = {**PAYLOAD, "max_tokens": 3000, "stream": True, "logit_bias": {"2": -100}}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=payload, timeout=60) as response:
        chunks = (line for line in response.iter_lines() if line.startswith("data: "))
        for _ in range(4):  # the role chunk, then content: the request is decoding
            next(chunks)
        assert adversary_service.engine.batch_size >= 1
    assert wait_until_idle(adversary_service)


def with_field(field: str, value: str) -> bytes:
    """PAYLOAD's raw JSON plus `"field": value` (built as text: json.dumps would recurse)."""
    return f'{json.dumps(PAYLOAD)[:-1]}, "{field}": {value}}}'.encode()


def deep_schema_body(levels: int) -> bytes:
    """A request whose response_format schema is an object nested `levels` objects deep."""
    schema = '{"type": "object", "properties": {"a": ' * levels + '{"type": "string"}' + "}}" * levels
    fmt = f'{{"type": "json_schema", "json_schema": {{"name": "d", "schema": {schema}}}}}'
    return with_field("response_format", fmt)


def post_raw(server, body: bytes, key: str | None = "sekret") -> httpx.Response:
    headers = {"content-type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    return httpx.post(server.url + "/v1/chat/completions", content=body, headers=headers, timeout=60)


def test_deep_body_is_400_naming_the_limit(guarded):
    """A body nested 2,000 deep failed while being decoded (500); now a 400 before any parser runs."""
    response = post_raw(guarded, with_field("metadata", '{"a": ' * 2_000 + "1" + "}" * 2_000))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "json_too_deep" and error["param"] == "metadata"
    assert "2001 levels" in error["message"] and "max_json_depth=128" in error["message"]
    assert "'/metadata" + "/a" * 127 + "'" in error["message"]
    assert post(guarded, PAYLOAD).status_code == 200


def test_deep_schema_is_400_naming_the_limit(guarded):
    """A schema nested 200 objects deep was a 500 (maximum recursion depth exceeded)."""
    response = post_raw(guarded, deep_schema_body(200))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "json_too_deep" and error["param"] == "response_format.json_schema.schema"
    assert "'/response_format/json_schema/schema/properties/a/properties/a/" in error["message"]
    assert post(guarded, PAYLOAD).status_code == 200


def test_deep_input_past_a_raised_limit_is_still_400(adversary_service):
    """With the depth limit raised out of the way, the parser's and the schema checker's own guards answer."""
    with LiveServer(create_app(adversary_service, Limits(max_json_depth=10**6)), free_port()) as server:
        for body in (with_field("metadata", "[" * 2_000 + "]" * 2_000), deep_schema_body(200)):
            response = post_raw(server, body, key=None)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] in ("json_too_deep", "invalid_schema")
        assert post(server, PAYLOAD, key=None).status_code == 200


@pytest.mark.parametrize(
    "schema",
    [
        '{"const": NaN}',
        '{"enum": [1, Infinity]}',
        '{"type": "number", "multipleOf": NaN}',
        '{"type": "integer", "minimum": -Infinity}',
        '{"type": "integer", "multipleOf": 1e400}',
    ],
)
def test_non_finite_numbers_are_400(guarded, schema):
    """Python's json reads NaN, Infinity and 1e400 (as inf); they are no JSON numbers and reached the
    compiler, which raised ValueError/InvalidOperation/OverflowError (a 500)."""
    fmt = f'{{"type": "json_schema", "json_schema": {{"name": "n", "schema": {schema}}}}}'
    response = post_raw(guarded, with_field("response_format", fmt))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    assert post(guarded, PAYLOAD).status_code == 200


@pytest.mark.parametrize(
    "schema",
    [
        '{"type": "string", "pattern": "a\\ud800"}',
        '{"type": "object", "properties": {"\\udfff": {"type": "string"}}, "required": ["\\udfff"]}',
        '{"const": "\\ud800"}',
        '{"enum": ["x", "\\ud800\\ud800"]}',
    ],
)
def test_lone_surrogates_are_not_500(adversary_service, schema):
    """JSON's "\\ud800" escapes decode to lone surrogates, which no UTF-8 encoder takes (was a 500)."""
    with LiveServer(create_app(adversary_service), free_port()) as server:
        fmt = f'{{"type": "json_schema", "json_schema": {{"name": "s", "schema": {schema}}}}}'
        response = post_raw(server, with_field("response_format", fmt), key=None)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert response.json()["error"]["code"] in (
                "invalid_schema",
                "unsupported_schema",
                "max_tokens_too_small",
            )
        assert post(server, PAYLOAD, key=None).status_code == 200


def wait_until_idle(service, seconds: float = 10.0) -> bool:
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        if service.engine.batch_size == 0 and service.engine.queue_depth == 0:
            return True
        time.sleep(0.05)
    return False
