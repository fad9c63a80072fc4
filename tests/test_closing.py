"""Budget-aware closing: under any budget at or above the minimum, finished outputs parse and validate."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from constrained.closing import ClosingPlan
from tests.conftest import TEST_MODEL_ID

SCHEMAS = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "tags"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "integer"}, "minItems": 2},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "number"}}}}},
]


def test_shortest_completion_and_closing_tokens(tokenizer):
    from constrained.token_index import LazyDFA
    from constrained.tokenizer_info import TokenizerInfo

    dfa = LazyDFA("a(?:bc|d)e|x")
    start = dfa.initial
    after_a, done = dfa.row(start)[ord("a")], dfa.row(start)[ord("x")]
    plan = ClosingPlan(dfa, TokenizerInfo.from_huggingface(tokenizer))
    assert plan.completion(start) == b"x"  # shortest first, then smallest
    assert plan.completion(after_a) == b"de"
    assert plan.completion(done) == b""
    assert plan.distance(done) == 0 and plan.distance(start) == 1
    assert plan.distance(after_a) == len(tokenizer.encode("de", add_special_tokens=False))
    ids = plan.closing_tokens(after_a, budget=plan.distance(after_a))
    assert ids.size and all(
        b"de".startswith(bytes(tokenizer.convert_ids_to_tokens(int(i)), "latin-1")) for i in ids
    )


def test_completion_of_deep_recursive_state():
    """Completions come from the grammar: a state 100 levels deep closes without searching the automaton."""
    from constrained.token_index import LazyDFA
    from grammars import compile_json_schema

    dfa = LazyDFA(compile_json_schema({}).grammar)
    state = dfa.initial
    for byte in b'[{"a":' * 50:
        state = dfa.row(state)[byte]
    assert dfa.completion(state) == b"0" + b"}]" * 50


@pytest.mark.parametrize("schema", SCHEMAS)
def test_outputs_close_within_every_budget(live_server, schema):
    payload = {
        "model": TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "JSON please"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "logit_bias": {"2": -100},  # the adversary must not end early on its own
        "seed": 7,
    }
    url = live_server.url + "/v1/chat/completions"
    too_small = httpx.post(url, json={**payload, "max_tokens": 1}, timeout=60)
    if too_small.status_code == 400:
        error = too_small.json()["error"]
        assert error["code"] == "max_tokens_too_small" and error["param"] == "max_tokens"
        minimum = int(error["message"].rsplit("takes ", 1)[1].split()[0])
    else:
        minimum = 1
    for budget in range(minimum, minimum + 12):
        response = httpx.post(url, json={**payload, "max_tokens": budget}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["completion_tokens"] <= budget
        jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), schema)


STRING = {"type": "string"}


def test_degenerate_repetition_is_closed(live_server, tokenizer):
    """The adversary forced to repeat one token inside a string still ends, well before max_tokens."""
    token = tokenizer.encode("a", add_special_tokens=False)[0]
    payload = {
        "model": TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "JSON please"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": STRING}},
        "logit_bias": {str(token): 100},
        "max_tokens": 400,
        "seed": 1,
    }
    response = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=120)
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 80
    assert json.loads(body["choices"][0]["message"]["content"]).endswith("a" * 32)


def test_whitespace_is_bounded(live_server, tokenizer):
    """Whitespace between JSON tokens is bounded: forcing spaces cannot stall the output."""
    space = tokenizer.encode(" ", add_special_tokens=False)[0]
    schema = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
        "required": ["a"],
        "additionalProperties": False,
    }
    payload = {
        "model": TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "JSON please"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "logit_bias": {str(space): 100},
        "max_tokens": 300,
        "seed": 2,
    }
    body = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=120).json()
    content = body["choices"][0]["message"]["content"]
    assert "  " not in content  # never two whitespace characters in a row
    jsonschema.validate(json.loads(content), schema)
