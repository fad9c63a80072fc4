"""End to end through the real `openai` SDK against a live uvicorn server (random-weight model)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import TEST_MODEL_ID

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Describe a person as JSON."}]


def chat(client, **kwargs):
    kwargs.setdefault("model", TEST_MODEL_ID)
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 24)
    return client.chat.completions.create(**kwargs)


def test_plain_chat_shape(client):
    response = chat(client, seed=1)
    assert response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion"
    assert response.model == TEST_MODEL_ID
    assert response.system_fingerprint
    assert len(response.choices) == 1
    choice = response.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.completion_tokens <= 24 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_is_binding(client):
    response = chat(client, max_completion_tokens=5, temperature=0, logit_bias={"2": -100})
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_json_schema_output_validates(client):
    finished = 0
    for seed in range(6):
        response = chat(
            client,
            seed=seed,
            max_tokens=120,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        )
        choice = response.choices[0]
        if choice.finish_reason == "stop":
            finished += 1
            jsonschema.validate(json.loads(choice.message.content), PERSON)
        else:  # cut by the budget: still a prefix of valid output
            assert choice.finish_reason == "length"
    assert finished >= 1


def test_json_object_output_is_an_object(client):
    for seed in range(4):
        response = chat(client, seed=seed, max_tokens=80, response_format={"type": "json_object"})
        if response.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_streaming_with_usage(client):
    stream = chat(client, seed=3, stream=True, n=2, stream_options={"include_usage": True}, max_tokens=10)
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    body = chunks[:-1]
    firsts = {c.choices[0].index: c.choices[0].delta for c in reversed(body)}
    assert set(firsts) == {0, 1}
    for delta in firsts.values():
        assert delta.role == "assistant" and delta.content == ""
    finishes = [c.choices[0] for c in body if c.choices[0].finish_reason is not None]
    assert sorted(f.index for f in finishes) == [0, 1]
    texts = ["", ""]
    for c in body:
        texts[c.choices[0].index] += c.choices[0].delta.content or ""
    whole = chat(client, seed=3, n=2, max_tokens=10)
    assert texts == [c.message.content for c in whole.choices]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_choices_differ_and_seed_is_deterministic(client):
    first = chat(client, n=3, seed=42, temperature=1.0)
    again = chat(client, n=3, seed=42, temperature=1.0)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1


def test_logprobs(client):
    response = chat(client, seed=5, logprobs=True, top_logprobs=3, max_tokens=6)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
        assert item.logprob <= item.top_logprobs[0].logprob + 1e-6
        assert bytes(item.bytes).decode("utf-8", "backslashreplace") == item.token


def test_logprobs_under_constraint_are_over_allowed_tokens(client):
    schema = {"enum": ["yes", "no"]}
    response = chat(
        client,
        seed=0,
        logprobs=True,
        top_logprobs=5,
        response_format={"type": "json_schema", "json_schema": {"name": "yn", "schema": schema}},
    )
    first = response.choices[0].logprobs.content[0]
    assert first.token == '"' or first.token.startswith('"')
    # every token that carries probability mass is allowed by the grammar
    for top in first.top_logprobs:
        if top.logprob > -9999:
            assert '"yes"'.startswith(top.token) or '"no"'.startswith(top.token)


def test_stop_string_is_excluded(client):
    base = (
        chat(client, seed=9, temperature=0, max_tokens=20, logit_bias={"2": -100}).choices[0].message.content
    )
    stop = base[8:11]
    cut = chat(client, seed=9, temperature=0, max_tokens=20, logit_bias={"2": -100}, stop=[stop, "\u2603"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == base[: base.index(stop)]


def test_models_and_health(live_server, client):
    assert [m.id for m in client.models.list().data] == [TEST_MODEL_ID]
    assert httpx.get(live_server.url + "/health").json()["status"] == "ok"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        chat(client, model="gpt-5")
    assert info.value.body["code"] == "model_not_found"


BAD_REQUESTS = [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"presence_penalty": "a lot"}, "presence_penalty"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"n": 129}, "n"),
    ({"top_logprobs": 2}, None),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"frobnicate": True}, "frobnicate"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "strin"}},
            }
        },
        "response_format.json_schema.schema",
    ),
    ({"max_tokens": 100000, "context_length_exceeded_behavior": "error"}, "max_tokens"),
]


@pytest.mark.parametrize(("change", "param"), BAD_REQUESTS)
def test_bad_input_is_400_and_server_keeps_serving(live_server, change, param):
    payload = {"model": TEST_MODEL_ID, "messages": MESSAGES, "max_tokens": 3, **change}
    response = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    healthy = httpx.post(
        live_server.url + "/v1/chat/completions",
        json={"model": TEST_MODEL_ID, "messages": MESSAGES, "max_tokens": 2},
        timeout=60,
    )
    assert healthy.status_code == 200


def test_invalid_json_body_is_400(live_server):
    response = httpx.post(
        live_server.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_ignored_openai_fields_are_accepted(client):
    response = chat(client, user="u1", metadata={"k": "v"}, store=False, max_tokens=2)
    assert response.choices[0].message.content is not None


def test_prompt_longer_than_context_is_400(live_server, adversary_service):
    text = "hello " * (adversary_service.engine.context_window + 10)
    payload = {"model": TEST_MODEL_ID, "messages": [{"role": "user", "content": text}], "max_tokens": 2}
    response = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
