"""Function calling end to end through the real `openai` SDK (random-weight model), plus the pieces alone.

The BFCL subset of `../shared/corpora/maskbench` supplies the tool schemas when present (a built-in set
otherwise): every call the adversary produces must parse and validate against its tool's schema.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import numpy as np
import pytest

from constrained.constraints import (
    ConstraintError,
    ToolSpec,
    arguments_grammar,
    build_tool_grammar,
    parameters_schema,
)
from constrained.tool_calls import TRIGGER, not_starting_with
from server.protocol import ChatCompletionRequest
from server.tools import CallParser, plan_tools, render_prompt
from tests.conftest import CORPORA, TEST_MODEL_ID

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {
    "get_weather": WEATHER,
    "get_time": TIME,
    "ping": {"type": "object", "additionalProperties": False},
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME, "strict": True}},
    {"type": "function", "function": {"name": "ping", "description": "No arguments."}},
]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
EOS = "2"  # <|im_end|>: biased away to make the adversary keep calling


def chat(client, **kwargs):
    kwargs.setdefault("model", TEST_MODEL_ID)
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 80)
    kwargs.setdefault("tools", TOOLS)
    return client.chat.completions.create(**kwargs)


def check_calls(message, schemas: dict[str, dict]) -> None:
    """Every call is well-formed and its arguments validate."""
    assert message.content is None
    assert message.tool_calls
    for call in message.tool_calls:
        assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
        assert call.type == "function"
        assert call.function.name in schemas
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


# ---------------------------------------------------------------------------------------------- tool_choice
@pytest.mark.parametrize("parallel", [True, False])
def test_required_always_calls(client, parallel):
    reasons = set()
    for seed in range(4):
        response = chat(client, seed=seed, tool_choice="required", parallel_tool_calls=parallel)
        choice = response.choices[0]
        reasons.add(choice.finish_reason)
        assert choice.finish_reason in ("tool_calls", "length")
        check_calls(choice.message, SCHEMAS)
        if not parallel:
            assert len(choice.message.tool_calls) == 1
    assert "tool_calls" in reasons


def test_named_tool_choice_calls_that_tool(client):
    for seed in range(3):
        choice = chat(
            client, seed=seed, tool_choice={"type": "function", "function": {"name": "get_time"}}
        ).choices[0]
        check_calls(choice.message, SCHEMAS)
        assert {c.function.name for c in choice.message.tool_calls} == {"get_time"}


def test_no_parameters_means_empty_arguments(client):
    choice = chat(
        client,
        seed=0,
        tool_choice={"type": "function", "function": {"name": "ping"}},
        parallel_tool_calls=False,
    ).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [("ping", "{}")]


def test_none_answers_in_text(client):
    for seed in range(3):
        choice = chat(client, seed=seed, tool_choice="none", max_tokens=12).choices[0]
        assert choice.message.tool_calls is None and isinstance(choice.message.content, str)
        assert choice.finish_reason in ("stop", "length")


def test_auto_text_or_constrained_calls(client):
    for seed in range(4):
        choice = chat(client, seed=seed).choices[0]
        if choice.message.tool_calls:
            check_calls(choice.message, SCHEMAS)
            assert choice.finish_reason in ("tool_calls", "length")
        else:
            assert not choice.message.content.startswith(TRIGGER)
            assert choice.finish_reason in ("stop", "length")


def allowed_bytes(grammar, state) -> list[bytes]:
    bits = np.unpackbits(grammar.state_mask(state).view(np.uint8), bitorder="little")
    return [grammar.info.token_bytes[i] for i in np.flatnonzero(bits) if i not in grammar.info.eos_token_ids]


def test_auto_grammar_constrains_a_started_call(adversary_service, tokenizer):
    """Under `auto` the text may be anything not starting with the trigger; a started call is constrained."""
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, "tools": TOOLS})
    grammar = build_tool_grammar(adversary_service.compiler, plan_tools(request))

    def matcher(text: str):
        m = grammar.matcher()
        return m if m.accept_tokens(tokenizer.encode(text, add_special_tokens=False)) else None

    assert grammar.matcher().can_terminate()  # the empty answer
    assert matcher("Hello <tool_call> world").can_terminate()
    assert matcher('<tool_call>\n{"name": "evil') is None
    started = matcher('<tool_call>\n{"name": "get_time", "arguments": {"zone": "')
    assert not started.can_terminate()
    follow = allowed_bytes(grammar, started.state)
    bad = [b for b in follow if not (b[:1].isupper() or b"\\u".startswith(b[:2]))]
    assert follow and not bad, bad
    done = matcher('<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>')
    assert done.can_terminate()
    assert b"\n" in allowed_bytes(grammar, done.state)  # a parallel call may follow


def test_auto_with_response_format_text_follows_schema(client):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    kinds = set()
    for seed in range(4):
        choice = chat(client, seed=seed, response_format=fmt, max_tokens=60).choices[0]
        if choice.message.tool_calls:
            kinds.add("calls")
            check_calls(choice.message, SCHEMAS)
        else:
            kinds.add("text")
            jsonschema.validate(json.loads(choice.message.content), schema)
    assert "text" in kinds


# ------------------------------------------------------------------------------------ parallel, streaming
def test_parallel_calls(client):
    choice = chat(client, seed=1, tool_choice="required", logit_bias={EOS: -100}, max_tokens=120).choices[0]
    check_calls(choice.message, SCHEMAS)
    assert len(choice.message.tool_calls) >= 2
    assert len({c.id for c in choice.message.tool_calls}) == len(choice.message.tool_calls)


def collect_stream(stream):
    """(content, calls by index, finish reasons, first deltas by call index) of a streamed choice 0."""
    content, calls, firsts, reasons = "", {}, {}, []
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
            content += delta.content or ""
            for tc in delta.tool_calls or ():
                if tc.index not in calls:
                    firsts[tc.index] = tc
                    calls[tc.index] = {"name": tc.function.name, "arguments": ""}
                else:
                    assert tc.id is None and tc.function.name is None
                calls[tc.index]["arguments"] += tc.function.arguments
    return content, calls, reasons, firsts


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_streamed_calls_match_whole(client, tool_choice):
    kwargs = dict(seed=7, tool_choice=tool_choice, logit_bias={EOS: -100}, max_tokens=120)
    content, calls, reasons, firsts = collect_stream(chat(client, stream=True, **kwargs))
    whole = chat(client, **kwargs).choices[0]
    assert content == ""
    assert sorted(calls) == list(range(len(calls))) and len(calls) >= 2
    for tc in firsts.values():
        assert tc.id.startswith("call_") and tc.type == "function" and tc.function.arguments == ""
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls
    ]
    assert reasons == [whole.finish_reason]
    check_calls(whole.message, SCHEMAS)


def test_streamed_single_call_finishes_with_tool_calls(client):
    kwargs = dict(seed=3, tool_choice="required", parallel_tool_calls=False)
    content, calls, reasons, _ = collect_stream(chat(client, stream=True, **kwargs))
    assert reasons == ["tool_calls"] and list(calls) == [0]
    jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS[calls[0]["name"]])


def test_streamed_auto_text_matches_whole(client):
    kwargs = dict(seed=0, max_tokens=16)
    whole = chat(client, **kwargs).choices[0]
    assert whole.message.tool_calls is None
    content, calls, reasons, _ = collect_stream(chat(client, stream=True, **kwargs))
    assert calls == {} and content == whole.message.content and reasons == [whole.finish_reason]


def test_streamed_calls_with_logprobs_and_n(client):
    kwargs = dict(seed=4, n=2, tool_choice="required", logprobs=True, stream_options={"include_usage": True})
    chunks = list(chat(client, stream=True, **kwargs))
    tokens = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
    assert tokens == chunks[-1].usage.completion_tokens
    arguments = {0: {}, 1: {}}
    for c in chunks:
        for choice in c.choices:
            for tc in choice.delta.tool_calls or ():
                arguments[choice.index][tc.index] = (
                    arguments[choice.index].get(tc.index, "") + tc.function.arguments
                )
    whole = chat(client, **{k: v for k, v in kwargs.items() if k != "stream_options"})
    for choice in whole.choices:
        assert [c.function.arguments for c in choice.message.tool_calls] == list(
            arguments[choice.index].values()
        )


# ---------------------------------------------------------------------------------------------- conversations
def test_multi_turn_exchange(client):
    first = chat(client, seed=2, tool_choice="required", parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    second = chat(client, seed=2, messages=messages, tool_choice="none", max_tokens=12)
    assert isinstance(second.choices[0].message.content, str)
    third = chat(client, seed=2, messages=messages, tool_choice="required", parallel_tool_calls=False)
    check_calls(third.choices[0].message, SCHEMAS)
    assert third.usage.prompt_tokens > first.usage.prompt_tokens


class _Tokenizer:
    """Records what the chat template receives."""

    def __init__(self, template: str) -> None:
        self.chat_template = template
        self.calls: list[tuple[list, dict]] = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def conversation(**extra) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "a", "arguments": '{"x":1}'},
                        },
                        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
            ],
            **extra,
        }
    )


def test_default_format_renders_tools_calls_and_results():
    tok = _Tokenizer("{% for m in messages %}{{ m.content }}{% endfor %}")
    text = render_prompt(tok, conversation(tools=TOOLS[:1]))
    messages, kwargs = tok.calls[0]
    assert "tools" not in kwargs
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("Be brief.\n\n# Tools")
    assert '"name": "get_weather"' in messages[0]["content"] and "<tool_call>" in messages[0]["content"]
    assert messages[2]["content"] == (
        'Checking.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
    )
    assert (
        messages[3]["content"]
        == "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nok\n</tool_response>"
    )
    assert "[assistant]" in text


def test_template_with_tools_gets_them_natively():
    tok = _Tokenizer("{% if tools %}{{ tools | tojson }}{% endif %}")
    render_prompt(tok, conversation(tools=TOOLS))
    messages, kwargs = tok.calls[0]
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["get_weather", "get_time", "ping"]
    assert kwargs["tools"][2]["function"]["parameters"]["properties"] == {}
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"x": 1}
    assert messages[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert messages[0]["role"] == "system"


# ---------------------------------------------------------------------------------------------- pieces
def test_not_starting_with_trigger_is_exact():
    rx = re.compile(not_starting_with(TRIGGER))
    for text in ["", "<", "<tool", "<tool_call", "hi", "<tool_cal\n", "\n<tool_call>", "<toolkit>"]:
        assert rx.fullmatch(text), text
    for text in [TRIGGER, TRIGGER + "x", TRIGGER + "\n{}"]:
        assert not rx.fullmatch(text), text


def test_parser_streams_arguments_with_tricky_strings():
    text = (
        '<tool_call>\n{"name": "f", "arguments": {"a": "}\\"]{", "b": [1, {}]}}\n</tool_call>\n'
        '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
    )
    for size in (1, 3, len(text)):
        parser, items = CallParser(text_allowed=True), []
        for i in range(0, len(text), size):
            items += parser.feed(text[i : i + size])
        items += parser.finish()
        assert parser.complete and parser.content == ""
        assert [(c.function.name, c.function.arguments) for c in parser.tool_calls()] == [
            ("f", '{"a": "}\\"]{", "b": [1, {}]}'),
            ("g", "{}"),
        ]
        heads = [d for kind, d in items if kind == "tool_call" and "id" in d]
        assert [h["index"] for h in heads] == [0, 1]
        assert all(h["function"]["arguments"] == "" for h in heads)


def test_parser_text_and_held_back_prefix():
    parser = CallParser(text_allowed=True)
    assert parser.feed("<tool") == []
    assert parser.feed("box") == [("content", "<toolbox")]
    parser = CallParser(text_allowed=True)
    assert parser.feed("<tool_") == []
    assert parser.finish() == [("content", "<tool_")] and not parser.complete


def test_parameters_must_describe_objects():
    tool = ToolSpec.from_openai(
        {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
    )
    with pytest.raises(ConstraintError) as info:
        parameters_schema(tool, 3)
    assert info.value.param == "tools[3].function.parameters"
    loose = ToolSpec.from_openai(
        {"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}
    )
    assert parameters_schema(loose, 0)["type"] == "object"


UNSUPPORTED = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
}


def test_strict_false_falls_back_to_any_object(client):
    tools = [{"type": "function", "function": {"name": "tag", "parameters": UNSUPPORTED, "strict": False}}]
    choice = chat(client, seed=0, tools=tools, tool_choice="required", parallel_tool_calls=False).choices[0]
    assert isinstance(json.loads(choice.message.tool_calls[0].function.arguments), dict)


# ---------------------------------------------------------------------------------------------- errors
def _tool(name: str, parameters=None, **extra) -> dict:
    function = {"name": name, **extra}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


BAD_REQUESTS = [
    ({"tools": [_tool("a"), _tool("a")]}, "tools[1].function.name"),
    ({"tools": [_tool("a"), _tool("bad name!")]}, "tools[1].function.name"),
    ({"tools": [_tool("a")], "tool_choice": {"type": "function", "function": {"name": "b"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "a"}}}, "tool_choice"),
    ({"tools": [_tool("a")], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": []}, "tools"),
    (
        {"tools": [_tool("a", {"type": "object", "properties": {"x": {"type": "strin"}}})]},
        "tools[0].function.parameters",
    ),
    ({"tools": [_tool("a"), _tool("b", {"type": "array"})]}, "tools[1].function.parameters"),
    ({"tools": [_tool("a", UNSUPPORTED, strict=True)]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "retrieval"}]}, None),
    ({"messages": [*MESSAGES, {"role": "tool", "content": "x"}]}, "messages[1]"),
]


@pytest.mark.parametrize(("change", "param"), BAD_REQUESTS)
def test_bad_tool_requests_are_400_and_server_keeps_serving(live_server, change, param):
    payload = {"model": TEST_MODEL_ID, "messages": MESSAGES, "max_tokens": 3, **change}
    response = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    if "strict" in json.dumps(change):
        assert "uniqueItems" in error["message"]
    healthy = httpx.post(
        live_server.url + "/v1/chat/completions",
        json={"model": TEST_MODEL_ID, "messages": MESSAGES, "max_tokens": 2, "tools": TOOLS},
        timeout=60,
    )
    assert healthy.status_code == 200


# ---------------------------------------------------------------------------------------------- corpus
BUILT_IN = [
    WEATHER,
    TIME,
    {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["n"],
    },
    {"type": "object", "properties": {"q": {"type": "string", "minLength": 1, "maxLength": 8}}},
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "x": {"type": "number"}},
        "required": ["ok"],
    },
    {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}}},
    {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}, "required": ["d"]},
    {
        "type": "object",
        "properties": {"v": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 4}]}},
        "required": ["v"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"p": {"type": "object", "properties": {"k": {"const": "v"}}, "required": ["k"]}},
        "required": ["p"],
    },
    {"type": "object", "properties": {"e": {"enum": [1, "two", None, True]}}, "required": ["e"]},
    {},
]


def tool_schemas(wanted: int = 55) -> tuple[list[dict], int]:
    """Tool schemas (BFCL when present, spread over its subsets) that compile, and how many were rejected."""
    path = CORPORA / "maskbench" / "BFCL.jsonl"
    if not path.is_file():
        return BUILT_IN, 0
    lines = path.read_text(encoding="utf-8").split("\n")
    stride = max(1, len(lines) // (wanted + 20))
    compiled, rejected = [], 0
    for line in lines[::stride]:
        schema = json.loads(line)["schema"]
        tool = ToolSpec.from_openai(_tool("f", schema, strict=True))
        try:
            arguments_grammar(tool, 0)
        except ConstraintError:
            rejected += 1
            continue
        compiled.append(schema)
        if len(compiled) == wanted:
            break
    return compiled, rejected


def test_corpus_calls_validate(client):
    schemas, rejected = tool_schemas()
    corpus = (CORPORA / "maskbench" / "BFCL.jsonl").is_file()
    assert len(schemas) >= (50 if corpus else 10), (len(schemas), rejected)

    def call(i: int):
        name = f"tool_{i}"
        return chat(
            client,
            seed=i,
            tools=[_tool(name, schemas[i], strict=True), _tool("ping")],
            tool_choice={"type": "function", "function": {"name": name}},
            parallel_tool_calls=False,
            max_tokens=200,
        ).choices[0]

    with ThreadPoolExecutor(16) as pool:
        choices = list(pool.map(call, range(len(schemas))))
    finished = 0
    for i, choice in enumerate(choices):
        check_calls(choice.message, {f"tool_{i}": schemas[i] or {"type": "object"}})
        finished += choice.finish_reason == "tool_calls"
    print(f"{len(schemas)} tool schemas compiled ({rejected} rejected); {finished} calls finished, all valid")
    assert finished >= len(schemas) // 5


def test_arguments_follow_the_schema_property_order(adversary_service):
    schema = {
        "type": "object",
        "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "boolean"}},
        "required": ["zeta", "alpha"],
        "additionalProperties": False,
    }
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "tool_choice": "required",
        }
    )
    grammar = build_tool_grammar(adversary_service.compiler, plan_tools(request), None)
    tokenizer = adversary_service.tokenizer
    ordered = '<tool_call>\n{"name": "f", "arguments": {"zeta": 1, "alpha": true}}\n</tool_call>'
    swapped = '<tool_call>\n{"name": "f", "arguments": {"alpha": true, "zeta": 1}}\n</tool_call>'
    assert grammar.matcher().accept_tokens(tokenizer.encode(ordered, add_special_tokens=False))
    assert not grammar.matcher().accept_tokens(tokenizer.encode(swapped, add_special_tokens=False))
