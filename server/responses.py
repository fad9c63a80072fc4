"""OpenAI's Responses API (`POST /v1/responses`), served by the chat path: protocol translation only.

Contract:
- `ResponsesRequest` validates a Responses request; unknown fields are rejected (400 naming them) except
  `IGNORED_FIELDS`. `previous_response_id` is a 400 naming it: nothing is ever stored (`store: false`
  semantics whatever `store` says), so a conversation travels whole in `input`.
- `to_chat(request)` translates it into the `ChatCompletionRequest` that `ChatService` serves: `instructions`
  -> a system message first; `input` (a string, or message / `function_call` / `function_call_output`
  items) -> messages; `text.format` -> `response_format`; Responses-shaped function tools (`strict` defaults
  to true, as in OpenAI's API) -> chat tools; `max_output_tokens` -> `max_tokens`. Errors name the
  Responses parameter (`input[2].call_id`, ...).
- `ResponsesService.prepare()` runs `ChatService.prepare()` (same engine, grammars, tool plan, errors) and
  renames the parameters its errors name into Responses terms (`text.format.schema`, `tools[0].parameters`,
  `max_output_tokens`, `input`); `create()` returns a `ResponseObject`; `stream()` yields the Responses SSE
  events (`response.created`, `response.in_progress`, `response.output_item.added`, ... ,
  `response.completed` or `response.incomplete`), each with `type` and a `sequence_number` from 0.
- Output: one `message` item (`output_text`), or one `function_call` item per call. `status` is
  `incomplete` with `incomplete_details.reason: "max_output_tokens"` when the budget ran out (the last item
  is then `incomplete` too; constrained output is still complete, thanks to budget-aware closing).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from constrained.engine import ChoiceDelta, ChoiceFinished, Event, RequestFailed, RequestFinished
from server.chat import ChatService, PreparedChat
from server.errors import APIError, generation_failed, validation_error
from server.limits import Limits, check_request
from server.protocol import (
    NAME_PATTERN,
    AssistantMessage,
    ChatCompletionRequest,
    FunctionCall,
    FunctionDefinition,
    FunctionName,
    JsonSchemaSpec,
    Message,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
)
from server.tools import CallParser, call_parser

IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key")
TEXT_PARTS = ("input_text", "output_text")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- request
class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | bool | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a format of type 'json_schema' requires 'name' and 'schema'")
        return self


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted, not acted on


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # omitted or null: true, as in OpenAI's Responses API


class FunctionChoice(_Strict):
    type: Literal["function"]
    name: str


class ResponsesRequest(_Strict):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    text: TextConfig | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None  # extension, as in chat completions
    stream: bool | None = None
    previous_response_id: str | None = None  # always a 400: nothing is stored
    include: list[str] | None = None  # only empty
    # Accepted, not acted on (listed in the README).
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class TextPart(_Strict):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[TextPart | RefusalPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text if isinstance(p, TextPart) else p.refusal for p in self.content)


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[TextPart]
    id: str | None = None
    status: str | None = None

    @property
    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem
ITEM_MODELS: dict[str, type[InputItem]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
}


# ---------------------------------------------------------------------------------------------- response
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: dict[str, Any] | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputMessage | OutputFunctionCall]
    parallel_tool_calls: bool
    previous_response_id: None = None
    temperature: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_p: float
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- translation
def to_chat(request: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request that serves `request`; raises `APIError` naming the Responses parameter."""
    if request.previous_response_id is not None:
        raise APIError(
            "previous_response_id is not supported: this server stores no responses; send the whole "
            "conversation in 'input'",
            param="previous_response_id",
            code="unsupported_parameter",
        )
    if request.include:
        raise APIError(
            f"include is not supported (got {request.include})", param="include", code="unsupported_parameter"
        )
    tools = request.tools or None
    choice = request.tool_choice
    if tools is None and choice in ("none", "auto"):
        choice = None  # harmless without tools; 'required' or a named function still fails
    return ChatCompletionRequest(
        model=request.model,
        messages=to_messages(request),
        max_tokens=request.max_output_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        seed=request.seed,
        response_format=_response_format(request.text),
        tools=[_chat_tool(tool) for tool in tools] if tools else None,
        tool_choice=_chat_tool_choice(choice),
        parallel_tool_calls=request.parallel_tool_calls is not False,
    )


def to_messages(request: ResponsesRequest) -> list[Message]:
    """`instructions` then `input` as chat messages; a `function_call` joins the assistant turn before it."""
    messages = [Message(role="system", content=request.instructions)] if request.instructions else []
    if isinstance(request.input, str):
        return [*messages, Message(role="user", content=request.input)]
    calls: set[str] = set()
    for i, raw in enumerate(request.input):
        item = parse_item(raw, i)
        if isinstance(item, MessageItem):
            messages.append(Message(role=item.role, content=item.text))
        elif isinstance(item, FunctionCallItem):
            calls.add(item.call_id)
            _add_call(
                messages,
                ToolCall(id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)),
            )
        else:
            if item.call_id not in calls:
                raise APIError(
                    f"no function_call item before it has call_id '{item.call_id}'",
                    param=f"input[{i}].call_id",
                    code="invalid_value",
                )
            messages.append(Message(role="tool", tool_call_id=item.call_id, content=item.text))
    if not messages:
        raise APIError("'input' must hold at least one item", param="input", code="invalid_value")
    return messages


def parse_item(raw: dict[str, Any], index: int) -> InputItem:
    """One `input` item, validated by its `type` (no type: a message); errors name `input[index]...`."""
    kind = raw.get("type", "message")
    model = ITEM_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise APIError(
            f"input items of type {json.dumps(kind)} are not supported; use message, function_call or "
            "function_call_output",
            param=f"input[{index}].type",
            code="unsupported_value",
        )
    _check_parts(raw, index)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{**error, "loc": ("input", index, *error["loc"])} for error in exc.errors()]
        raise validation_error(RequestValidationError(errors)) from None


def _check_parts(raw: dict[str, Any], index: int) -> None:
    """A content part this text-only server cannot take (images, files, audio) is a 400 naming it."""
    key = "output" if raw.get("type") == "function_call_output" else "content"
    parts = raw.get(key)
    for j, part in enumerate(parts if isinstance(parts, list) else ()):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in (*TEXT_PARTS, "refusal"):
            raise APIError(
                f"content parts of type {json.dumps(kind)} are not supported (this server serves a text "
                "model)",
                param=f"input[{index}].{key}[{j}].type",
                code="unsupported_value",
            )


def _add_call(messages: list[Message], call: ToolCall) -> None:
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        messages[-1] = last.model_copy(update={"tool_calls": [*(last.tool_calls or ()), call]})
    else:
        messages.append(Message(role="assistant", content="", tool_calls=[call]))


def _response_format(text: TextConfig | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    spec = JsonSchemaSpec(name=fmt.name, description=fmt.description, schema=fmt.schema_, strict=fmt.strict)
    return ResponseFormat(type="json_schema", json_schema=spec)


def _strict(tool: FunctionTool) -> bool:
    return tool.strict is not False


def _chat_tool(tool: FunctionTool) -> Tool:
    definition = FunctionDefinition(
        name=tool.name, description=tool.description, parameters=tool.parameters, strict=_strict(tool)
    )
    return Tool(type="function", function=definition)


def _chat_tool_choice(choice: str | FunctionChoice | None) -> str | NamedToolChoice | None:
    if isinstance(choice, FunctionChoice):
        return NamedToolChoice(type="function", function=FunctionName(name=choice.name))
    return choice


_RENAMES = (
    (re.compile(r"^response_format(\.json_schema)?"), "text.format"),
    (re.compile(r"^tools\[(\d+)\]\.function\."), r"tools[\1]."),
    (re.compile(r"^max_tokens$"), "max_output_tokens"),
    (re.compile(r"^messages"), "input"),
)


def in_responses_terms(error: APIError) -> APIError:
    """`error` with its parameter (and the parameter's name in its message) in Responses terms."""
    param = error.param
    for pattern, replacement in _RENAMES:
        if param is not None:
            param = pattern.sub(replacement, param)
    message = re.sub(r"\bmax_tokens\b", "max_output_tokens", error.message)
    return APIError(
        message, status=error.status, type=error.type, param=param, code=error.code, headers=error.headers
    )


# ---------------------------------------------------------------------------------------------- output
def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def skeleton(request: ResponsesRequest, model_id: str) -> ResponseObject:
    """The response before any output: the request's settings echoed, as OpenAI does."""
    fmt = request.text.format if request.text is not None and request.text.format is not None else None
    choice = request.tool_choice
    return ResponseObject(
        id=_new_id("resp"),
        created_at=int(time.time()),
        status="in_progress",
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=model_id,
        output=[],
        parallel_tool_calls=request.parallel_tool_calls is not False,
        temperature=1.0 if request.temperature is None else request.temperature,
        text={"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        tool_choice=choice.model_dump() if isinstance(choice, FunctionChoice) else choice or "auto",
        tools=[{**tool.model_dump(), "strict": _strict(tool)} for tool in request.tools or ()],
        top_p=1.0 if request.top_p is None else request.top_p,
        user=request.user,
        metadata=request.metadata or {},
    )


def finish(response: ResponseObject, reason: str, input_tokens: int, output_tokens: int) -> None:
    """Mark `response` (and its last item) done: `incomplete` when the budget ran out."""
    incomplete = reason == "length"
    status: ItemStatus = "incomplete" if incomplete else "completed"
    response.status = status
    response.incomplete_details = IncompleteDetails(reason="max_output_tokens") if incomplete else None
    if response.output:
        response.output[-1].status = status
    response.usage = ResponseUsage(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )


def output_items(message: AssistantMessage) -> list[OutputMessage | OutputFunctionCall]:
    """A finished chat message as Responses output items (all `completed`)."""
    if message.tool_calls:
        return [
            OutputFunctionCall(
                id=_new_id("fc"),
                call_id=call.id,
                name=call.function.name,
                arguments=call.function.arguments,
                status="completed",
            )
            for call in message.tool_calls
        ]
    return [
        OutputMessage(id=_new_id("msg"), status="completed", content=[OutputText(text=message.content or "")])
    ]


@dataclass
class EventStream:
    """The SSE events of one streamed response, numbered; items open on their first text and close when the
    next item opens or the response ends."""

    response: ResponseObject
    sequence: int = 0
    open: OutputMessage | OutputFunctionCall | None = field(default=None)

    def event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    def _snapshot(self, kind: str) -> str:
        return self.event(kind, response=self.response.model_dump(mode="json"))

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open.id, "output_index": len(self.response.output) - 1}

    def start(self) -> list[str]:
        return [self._snapshot("response.created"), self._snapshot("response.in_progress")]

    def _add(self, item: OutputMessage | OutputFunctionCall) -> list[str]:
        events = self.close("completed")
        self.response.output.append(item)
        self.open = item
        item_dump = item.model_dump(mode="json")
        return [
            *events,
            self.event(
                "response.output_item.added", output_index=len(self.response.output) - 1, item=item_dump
            ),
        ]

    def text(self, delta: str) -> list[str]:
        events: list[str] = []
        message = self.open
        if not isinstance(message, OutputMessage):
            message = OutputMessage(id=_new_id("msg"), status="in_progress", content=[])
            events = self._add(message)
            message.content.append(OutputText(text=""))
            part = message.content[0].model_dump()
            events.append(
                self.event("response.content_part.added", **self._where(), content_index=0, part=part)
            )
        if delta:
            message.content[0].text += delta
            events.append(
                self.event(
                    "response.output_text.delta", **self._where(), content_index=0, delta=delta, logprobs=[]
                )
            )
        return events

    def call(self, call_id: str, name: str) -> list[str]:
        item = OutputFunctionCall(
            id=_new_id("fc"), call_id=call_id, name=name, arguments="", status="in_progress"
        )
        return self._add(item)

    def arguments(self, delta: str) -> list[str]:
        assert isinstance(self.open, OutputFunctionCall)
        self.open.arguments += delta
        return [self.event("response.function_call_arguments.delta", **self._where(), delta=delta)]

    def close(self, status: ItemStatus) -> list[str]:
        item = self.open
        if item is None:
            return []
        where = self._where()
        if isinstance(item, OutputMessage):
            part = item.content[0]
            events = [
                self.event(
                    "response.output_text.done", **where, content_index=0, text=part.text, logprobs=[]
                ),
                self.event("response.content_part.done", **where, content_index=0, part=part.model_dump()),
            ]
        else:
            events = [
                self.event(
                    "response.function_call_arguments.done", **where, name=item.name, arguments=item.arguments
                )
            ]
        item.status = status
        self.open = None
        return [
            *events,
            self.event(
                "response.output_item.done",
                output_index=where["output_index"],
                item=item.model_dump(mode="json"),
            ),
        ]

    def piece(self, kind: str, value: Any) -> list[str]:
        """One `CallParser` item: content text, a call's first delta, or an argument fragment."""
        if kind == "content":
            return self.text(value)
        function = value["function"]
        if "id" in value:
            return self.call(value["id"], function["name"]) + (
                self.arguments(function["arguments"]) if function["arguments"] else []
            )
        return self.arguments(function["arguments"])

    def end(self, reason: str, input_tokens: int, output_tokens: int) -> list[str]:
        events = [] if self.response.output else self.text("")  # no output at all: an empty message
        incomplete = reason == "length"
        events += self.close("incomplete" if incomplete else "completed")
        finish(self.response, reason, input_tokens, output_tokens)
        return [*events, self._snapshot("response.incomplete" if incomplete else "response.completed")]

    def fail(self, error: APIError) -> list[str]:
        self.response.status = "failed"
        self.response.error = {"code": error.code or "server_error", "message": error.message}
        return [
            self.event("error", code=error.code, message=error.message, param=error.param),
            self._snapshot("response.failed"),
        ]


# ---------------------------------------------------------------------------------------------- service
@dataclass(frozen=True)
class PreparedResponse:
    request: ResponsesRequest
    chat: PreparedChat


@dataclass
class ResponsesService:
    chat: ChatService

    async def prepare(self, request: ResponsesRequest, limits: Limits) -> PreparedResponse:
        """Translate, check the limits and prepare through the chat path; errors in Responses terms."""
        try:
            chat_request = to_chat(request)
            check_request(chat_request, limits)
            return PreparedResponse(request, await self.chat.prepare(chat_request))
        except APIError as error:
            raise in_responses_terms(error) from None

    async def create(
        self, prepared: PreparedResponse, disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> ResponseObject:
        completion = await self.chat.complete(prepared.chat, disconnected)
        choice = completion.choices[0]
        response = skeleton(prepared.request, self.chat.model_id)
        response.output = output_items(choice.message)
        usage = completion.usage
        finish(response, choice.finish_reason, usage.prompt_tokens, usage.completion_tokens)
        return response

    async def stream(self, prepared: PreparedResponse) -> AsyncIterator[str]:
        generation = prepared.chat.generation
        handle, events = self.chat.submit(generation)
        deadline = self.chat.deadline()
        out = EventStream(skeleton(prepared.request, self.chat.model_id))
        parser = call_parser(prepared.chat.tools)
        reason = "stop"
        try:
            for line in out.start():
                yield line
            while True:
                try:
                    event = await self.chat.next_event(events, deadline)
                except APIError as error:
                    lines, done = out.fail(error), True
                else:
                    lines, reason, done = self._on_event(out, parser, event, reason)
                for line in lines:
                    yield line
                if done:
                    break
        finally:
            handle.cancel()

    @staticmethod
    def _on_event(
        out: EventStream, parser: CallParser | None, event: Event, reason: str
    ) -> tuple[list[str], str, bool]:
        """The events for one engine event, the finish reason so far, and whether the stream ends."""
        if isinstance(event, ChoiceDelta):
            pieces = parser.feed(event.text) if parser is not None else [("content", event.text)]
            return [line for kind, value in pieces for line in out.piece(kind, value)], reason, False
        if isinstance(event, ChoiceFinished):
            pieces = parser.finish() if parser is not None else []
            return (
                [line for kind, value in pieces for line in out.piece(kind, value)],
                event.finish_reason,
                False,
            )
        if isinstance(event, RequestFailed):
            return out.fail(generation_failed(event.message, event.limit)), reason, True
        if isinstance(event, RequestFinished):
            return out.end(reason, event.prompt_tokens, event.completion_tokens), reason, True
        return [], reason, False
