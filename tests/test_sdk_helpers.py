"""The OpenAI SDK's structured-output helpers against the live server (random-weight model).

`client.chat.completions.parse(response_format=PydanticModel)` sends a strict, pydantic-generated schema
(`additionalProperties: false`, every property required, `$defs` references) and parses the answer;
`openai.pydantic_function_tool` does the same for function calling (a 400 is a failure, never a skip).
"""

from __future__ import annotations

import enum
import json

import jsonschema
import openai
import pydantic
import pytest
from openai.lib._pydantic import to_strict_json_schema

from constrained.api import Compiler
from tests.conftest import TEST_MODEL_ID


class Mood(enum.StrEnum):
    happy = "happy"
    sad = "sad"


class Flags(pydantic.BaseModel):
    ok: bool
    mood: Mood


class Item(pydantic.BaseModel):
    name: str
    count: int


class Order(pydantic.BaseModel):
    items: list[Item]
    note: str | None
    flags: Flags


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: str = pydantic.Field(max_length=10)
    celsius: bool


MESSAGES = [{"role": "user", "content": "Answer in JSON."}]


STRICT_CASES = [  # (model, a valid instance, near misses the strict schema refuses)
    (
        Flags,
        Flags(ok=True, mood=Mood.sad),
        ['{"ok":true,"mood":"angry"}', '{"ok":true}', '{"ok":1,"mood":"sad"}'],
    ),
    (
        Order,
        Order(items=[Item(name="a", count=2)], note=None, flags=Flags(ok=False, mood=Mood.happy)),
        [
            '{"items":[],"flags":{"ok":true,"mood":"sad"}}',
            '{"items":[{"name":"a","count":"2"}],"note":null,"flags":{"ok":true,"mood":"sad"}}',
            '{"items":[],"note":null,"flags":{"ok":true,"mood":"sad"},"x":1}',
        ],
    ),
    (GetWeather, GetWeather(city="Paris", celsius=True), ['{"city":"Paris, France","celsius":true}']),
]


def complete_match(grammar, tokenizer, text: str) -> bool:
    """Whether the grammar accepts `text` token by token and may end there."""
    matcher = grammar.matcher()
    return matcher.accept_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.can_terminate()


@pytest.mark.parametrize(
    ("model", "valid", "near_misses"), STRICT_CASES, ids=lambda c: getattr(c, "__name__", "")
)
def test_sdk_strict_schemas_compile(tokenizer, model, valid, near_misses):
    """The SDK's strict schemas compile, and the grammar enforces them: an instance in, near misses out."""
    schema = to_strict_json_schema(model)
    grammar = Compiler.for_tokenizer(tokenizer).json_schema(schema)
    assert complete_match(grammar, tokenizer, valid.model_dump_json())
    for text in near_misses:
        assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(text)), text
        assert not complete_match(grammar, tokenizer, text), text


def test_parse_returns_a_model(client):
    for seed in range(20):
        try:
            completion = client.chat.completions.parse(
                model=TEST_MODEL_ID, messages=MESSAGES, response_format=Flags, max_tokens=40, seed=seed
            )
        except openai.LengthFinishReasonError:
            continue
        message = completion.choices[0].message
        assert completion.choices[0].finish_reason == "stop"
        assert isinstance(message.parsed, Flags)
        assert message.refusal is None
        return
    pytest.fail("no seed finished within 40 tokens")


def test_parse_nested_model(client):
    try:
        completion = client.chat.completions.parse(
            model=TEST_MODEL_ID, messages=MESSAGES, response_format=Order, max_tokens=120, seed=0
        )
    except openai.LengthFinishReasonError as exc:  # closed in time: valid even when cut by max_tokens
        Order.model_validate_json(exc.completion.choices[0].message.content)
    else:
        assert isinstance(completion.choices[0].message.parsed, Order)


def test_pydantic_function_tool(client):
    tool = openai.pydantic_function_tool(GetWeather)
    for seed in range(20):
        try:
            completion = client.chat.completions.parse(
                model=TEST_MODEL_ID,
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[tool],
                tool_choice={"type": "function", "function": {"name": "GetWeather"}},
                max_tokens=80,
                seed=seed,
            )
        except openai.LengthFinishReasonError:
            continue
        calls = completion.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "GetWeather"
        assert isinstance(calls[0].function.parsed_arguments, GetWeather)
        return
    pytest.fail("no seed finished within 80 tokens")
