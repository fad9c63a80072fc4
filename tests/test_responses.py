"""`POST /v1/responses` through the real `openai` SDK against the live server (random-weight model).

The Responses API has no `seed`: determinism comes from `temperature=0` (the server also takes `seed` as an
extension, through `extra_body`).
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import jsonschema
import openai
import pydantic
import pytest

from constrained.tool_calls import call_text
from server.app import create_app
from server.errors import APIError
from server.protocol import Message
from server.responses import EventStream, ResponsesRequest, skeleton, to_chat
from server.tools import CallParser
from tests.conftest import TEST_MODEL_ID, LiveServer, free_port

FLAGS = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["happy", "sad"]}},
    "required": ["ok", "mood"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "celsius": {"type": "boolean"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}
SCHEMA_FORMAT = {"format": {"type": "json_schema", "name": "flags", "schema": FLAGS, "strict": True}}


class Flags(pydantic.BaseModel):
    ok: bool
    mood: Literal["happy", "sad"]


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: str = pydantic.Field(max_length=10)
    celsius: bool


def create(client, **kwargs):
    kwargs.setdefault("model", TEST_MODEL_ID)
    kwargs.setdefault("input", "Answer in JSON.")
    kwargs.setdefault("max_output_tokens", 40)
    kwargs.setdefault("temperature", 0)
    return client.responses.create(**kwargs)


def test_text_response_shape(client):
    response = create(client, max_output_tokens=6, instructions="Be brief.", metadata={"k": "v"}, store=False)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == TEST_MODEL_ID and response.instructions == "Be brief."
    assert response.status in ("completed", "incomplete")
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert item.content[0].type == "output_text"
    assert response.output_text == item.content[0].text
    usage = response.usage
    assert 0 < usage.output_tokens <= 6 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.text.format.type == "text" and response.max_output_tokens == 6


def test_instructions_come_first_as_system(client):
    plain = create(client, max_output_tokens=1)
    instructed = create(client, max_output_tokens=1, instructions="You answer in JSON. " * 20)
    assert instructed.usage.input_tokens > plain.usage.input_tokens


def test_json_schema_output_validates(client):
    response = create(client, text=SCHEMA_FORMAT)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), FLAGS)
    assert response.text.format.type == "json_schema" and response.text.format.name == "flags"


def test_json_object_output_is_an_object(client):
    response = create(client, text={"format": {"type": "json_object"}}, max_output_tokens=30)
    assert isinstance(json.loads(response.output_text), dict)  # closed in time even when cut


def parse(client, **kwargs):
    kwargs.setdefault("model", TEST_MODEL_ID)
    kwargs.setdefault("input", "Answer in JSON.")
    kwargs.setdefault("max_output_tokens", 40)
    kwargs.setdefault("temperature", 0)
    return client.responses.parse(**kwargs)


def test_parse_returns_a_model(client):
    response = parse(client, text_format=Flags)
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Flags)


def test_stream_matches_create(client):
    whole = parse(client, text_format=Flags)
    with client.responses.stream(
        model=TEST_MODEL_ID, input="Answer in JSON.", text_format=Flags, max_output_tokens=40, temperature=0
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text == whole.output_text
    assert isinstance(final.output_parsed, Flags)
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_stream_incomplete_ends_with_response_incomplete(client):
    events = list(create(client, stream=True, max_output_tokens=3))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output[0].status == "incomplete"


def test_required_tool_call_arguments_validate(client):
    response = create(
        client, input="Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required", max_output_tokens=80
    )
    assert response.output and all(item.type == "function_call" for item in response.output)
    for item in response.output:
        assert item.name == "get_weather" and item.call_id.startswith("call_") and item.id.startswith("fc_")
        jsonschema.validate(json.loads(item.arguments), WEATHER)
    assert response.tool_choice == "required" and response.tools[0].strict is True


def test_parse_with_pydantic_function_tool(client):
    response = parse(
        client,
        input="Weather in Paris?",
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "name": "GetWeather"},
        parallel_tool_calls=False,
        max_output_tokens=80,
    )
    [call] = response.output
    assert call.type == "function_call" and isinstance(call.parsed_arguments, GetWeather)


def test_streamed_tool_call(client):
    events = list(
        create(
            client,
            stream=True,
            input="Weather?",
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "name": "get_weather"},
            parallel_tool_calls=False,
            max_output_tokens=80,
        )
    )
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    added = next(e for e in events if e.type == "response.output_item.added")
    assert (
        added.item.type == "function_call" and added.item.name == "get_weather" and added.item.arguments == ""
    )
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    final = events[-1].response
    assert deltas == done.arguments == final.output[0].arguments
    jsonschema.validate(json.loads(deltas), WEATHER)
    assert final.output[0].call_id == added.item.call_id


def test_multi_turn_with_function_call_output(client):
    first = create(
        client, input="Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required", max_output_tokens=80
    )
    outputs = [
        {"type": "function_call_output", "call_id": item.call_id, "output": '{"temperature": 21}'}
        for item in first.output
    ]
    turn = [{"role": "user", "content": "Weather in Paris?"}, *first.output, *outputs]
    second = create(client, input=turn, tools=[WEATHER_TOOL], tool_choice="none", max_output_tokens=8)
    assert second.output[0].type == "message"
    assert second.usage.input_tokens > first.usage.input_tokens
    turn = [*turn, *second.output, {"role": "user", "content": "Thanks."}]  # output messages go back as is
    third = create(client, input=turn, tools=[WEATHER_TOOL], tool_choice="none", max_output_tokens=2)
    assert third.usage.input_tokens > second.usage.input_tokens


def test_translation_to_chat():
    request = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be exact.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_object"}},
            "max_output_tokens": 7,
        }
    )
    chat = to_chat(request)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "tool"]
    assert chat.messages[0] == Message(role="system", content="Be exact.")
    assert [c.id for c in chat.messages[2].tool_calls] == ["c1", "c2"]
    assert [m.text for m in chat.messages[3:]] == ["sunny", "rain"]
    assert chat.max_tokens == 7 and chat.response_format.type == "json_object"
    assert chat.tools[0].function.strict is True  # omitted strict: true, as in OpenAI's Responses API
    assert chat.tool_choice.function.name == "f"


BAD_REQUESTS = [  # (change, param, code)
    (
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "strin"}}}},
        "text.format.schema",
        "invalid_schema",
    ),
    (
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "x",
                    "schema": {"type": "string", "format": "duration"},
                }
            }
        },
        "text.format.schema",
        "unsupported_schema",
    ),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format", "invalid_value"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
    (
        {
            "tools": [
                {
                    **WEATHER_TOOL,
                    "parameters": {
                        "type": "object",
                        "properties": {"ip": {"format": "duration", "type": "string"}},
                    },
                }
            ]
        },
        "tools[0].parameters",
        "unsupported_schema",
    ),
    (
        {"tools": [{**WEATHER_TOOL, "parameters": {"type": "array"}}]},
        "tools[0].parameters",
        "invalid_function_parameters",
    ),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "invalid_value"),
    (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice",
        "unknown_tool",
    ),
    ({"max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"max_output_tokens": 2, "text": SCHEMA_FORMAT}, "max_output_tokens", "max_tokens_too_small"),
    ({"temperature": 3}, "temperature", "invalid_value"),
    ({"frobnicate": True}, "frobnicate", "unknown_parameter"),
    ({"previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
    ({"input": []}, "input", "invalid_value"),
    (
        {"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
        "input[0].call_id",
        "invalid_value",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        "input[0].content[0].type",
        "unsupported_value",
    ),
    ({"input": [{"role": "wizard", "content": "hi"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "unsupported_value"),
]


@pytest.mark.parametrize(("change", "param", "code"), BAD_REQUESTS)
def test_bad_input_is_400_naming_the_param(live_server, change, param, code):
    payload = {"model": TEST_MODEL_ID, "input": "hi", "max_output_tokens": 3, **change}
    response = httpx.post(live_server.url + "/v1/responses", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code), error
    assert "max_tokens" not in error["message"].replace("max_tokens_too_small", "")


def test_sdk_raises_on_bad_schema(client):
    with pytest.raises(openai.BadRequestError) as info:
        create(client, text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "strin"}}})
    assert info.value.body["param"] == "text.format.schema"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        create(client, model="gpt-5")
    assert info.value.body["code"] == "model_not_found"


def sse(lines: list[str]) -> list[dict]:
    return [json.loads(line.split("data: ", 1)[1]) for line in lines]


def test_event_stream_numbers_items_and_closes_each():
    """Two parallel calls from the chat path's `CallParser`: two items, each closed before the next opens."""
    request = ResponsesRequest.model_validate({"model": "m", "input": "x", "tools": [WEATHER_TOOL]})
    out = EventStream(skeleton(request, "m"))
    parser = CallParser(text_allowed=False)
    text = "\n".join(
        call_text("get_weather", json.dumps({"city": c, "celsius": True})) for c in ("Oslo", "Rome")
    )
    lines = out.start() + [
        line for piece in parser.feed(text) + parser.finish() for line in out.piece(*piece)
    ]
    events = sse(lines + out.end("stop", 10, 20))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    items = [(e["type"], e["output_index"]) for e in events if e["type"].startswith("response.output_item")]
    assert items == [
        ("response.output_item.added", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.output_item.done", 1),
    ]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["usage"]["total_tokens"] == 30
    assert [json.loads(item["arguments"])["city"] for item in final["output"]] == ["Oslo", "Rome"]


def test_event_stream_failure():
    out = EventStream(skeleton(ResponsesRequest.model_validate({"model": "m", "input": "x"}), "m"))
    events = sse(
        out.start() + out.text("partial") + out.fail(APIError("boom", status=500, type="server_error"))
    )
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert (
        events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["message"] == "boom"
    )


def test_api_key_is_required(adversary_service):
    with LiveServer(create_app(adversary_service, api_key="k"), free_port()) as server:
        payload = {"model": TEST_MODEL_ID, "input": "hi", "max_output_tokens": 1}
        response = httpx.post(server.url + "/v1/responses", json=payload, timeout=60)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        authorized = httpx.post(
            server.url + "/v1/responses", json=payload, headers={"Authorization": "Bearer k"}, timeout=60
        )
        assert authorized.status_code == 200 and authorized.json()["object"] == "response"
