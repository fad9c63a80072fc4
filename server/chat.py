"""Chat completions: OpenAI request -> engine request -> OpenAI response (whole or streamed).

Contract: `ChatService.prepare()` turns a validated `ChatCompletionRequest` into a `PreparedChat` (the engine
request and the tool plan, validated once) or raises `APIError` (400/404) naming the parameter; `complete()`
returns a `ChatCompletion`; `stream()` yields the SSE lines of OpenAI's streaming protocol, ending with
`data: [DONE]`. A client that goes away cancels its request in the engine.

The constraint: `output_constraint(request)` maps `grammar` / `structured_outputs` / `response_format` (at
most one) onto a `constrained.constraints` output constraint and the parameter its errors name; the tool plan
(`server.tools`) then makes the answer's grammar from it (`constrained.constraints.build_tool_grammar`).
Compiling runs off the event loop within the compile time budget.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from transformers import PreTrainedTokenizerBase

from constrained import constraints
from constrained.engine import (
    ChoiceDelta,
    ChoiceFinished,
    Engine,
    Event,
    GenerationRequest,
    RequestFailed,
    RequestFinished,
    RequestHandle,
    TokenLogprob,
)
from constrained.grammar import Grammar, GrammarCompiler
from constrained.reasoning import (
    EFFORT_BUDGETS,
    Reasoning,
    ReasoningSplitter,
    reasoning_grammar,
    split_reasoning,
)
from constrained.sampling import SamplingParams
from constrained.tokenizer_info import TokenizerInfo
from server.errors import APIError, generation_failed
from server.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaMessage,
    TokenLogprobOut,
    TopLogprob,
    Usage,
)
from server.tools import api_error, call_parser, plan_tools, render_prompt

SCHEMA_PARAM = "response_format.json_schema.schema"


@dataclass(frozen=True)
class PreparedChat:
    """A validated request, its engine request, and its tool plan (None without tools)."""

    request: ChatCompletionRequest
    generation: GenerationRequest
    tools: constraints.ToolPlan | None


def output_constraint(request: ChatCompletionRequest) -> tuple[constraints.OutputConstraint, str] | None:
    """The output constraint of `grammar`, `structured_outputs` or `response_format` (at most one may be
    given), and the parameter its errors name; None for free text."""
    fmt, extension = request.response_format, request.structured_outputs
    if request.grammar is not None:
        if extension is not None or (fmt is not None and fmt.type != "text"):
            raise APIError(
                "use only one of grammar, response_format and structured_outputs",
                param="grammar",
                code="invalid_value",
            )
        return constraints.TextGrammar(request.grammar, "gbnf"), "grammar"
    if extension is not None:
        if fmt is not None and fmt.type != "text":
            raise APIError(
                "use either response_format or structured_outputs, not both",
                param="structured_outputs",
                code="invalid_value",
            )
        if extension.regex is not None:
            return constraints.Regex(extension.regex), "structured_outputs.regex"
        if extension.grammar is not None:
            return constraints.TextGrammar(extension.grammar, "lark"), "structured_outputs.grammar"
        if extension.choice is not None:
            return constraints.Choice(tuple(extension.choice)), "structured_outputs.choice"
        return constraints.JsonSchema(extension.json_), "structured_outputs.json"
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return constraints.JsonObject(), "response_format"
    spec = fmt.json_schema
    return constraints.JsonSchema(spec.schema_, spec.name, spec.strict), SCHEMA_PARAM


@dataclass
class ChatService:
    engine: Engine
    tokenizer: PreTrainedTokenizerBase
    compiler: GrammarCompiler
    model_id: str
    compile_timeout_s: float = 30.0
    request_timeout_s: float = 900.0
    system_fingerprint: str = "fp_constrained_0.1"
    created: int = field(default_factory=lambda: int(time.time()))
    reasoning: Reasoning | None = None  # a reasoning parser: think freely, then the constraint applies

    @property
    def info(self) -> TokenizerInfo:
        return self.compiler.info

    # ------------------------------------------------------------------ request -> engine
    async def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        if request.model != self.model_id:
            raise APIError(
                f"The model '{request.model}' does not exist; this server serves '{self.model_id}'.",
                status=404,
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        plan = plan_tools(request)
        prompt_ids = self._render_prompt(request)
        max_tokens = self._max_tokens(request, len(prompt_ids))
        grammar = await self._grammar(request)
        if plan is not None:
            text = grammar
            grammar = await self.compile(
                lambda: constraints.build_tool_grammar(self.compiler, plan, text), "tools"
            )
        reasoning = self._reasoning(request, max_tokens)
        if reasoning is not None and grammar is not None:
            answer = grammar
            grammar = await self.compile(
                lambda: reasoning_grammar(self.compiler, answer, reasoning), "reasoning_effort"
            )
        shortest = await asyncio.to_thread(grammar.min_tokens) if grammar is not None else 0
        if shortest > max_tokens:
            raise APIError(
                f"max_tokens={max_tokens} is too small: the shortest output matching the constraint takes "
                f"{shortest} tokens",
                param="max_tokens",
                code="max_tokens_too_small",
            )
        generation = GenerationRequest(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            params=self._sampling_params(request),
            n=request.n,
            grammar=grammar,
            stop=request.stop_list,
            logprobs=request.logprobs,
            top_logprobs=request.top_logprobs or 0,
            reasoning=reasoning,
        )
        return PreparedChat(request, generation, plan)

    def _reasoning(self, request: ChatCompletionRequest, max_tokens: int) -> Reasoning | None:
        """The request's thinking (None without a reasoning parser): at most half the output budget."""
        if self.reasoning is None:
            return None
        budget = EFFORT_BUDGETS[request.reasoning_effort or "medium"]
        return replace(self.reasoning, budget=min(budget, max_tokens // 2))

    def _render_prompt(self, request: ChatCompletionRequest) -> list[int]:
        text = render_prompt(self.tokenizer, request)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _max_tokens(self, request: ChatCompletionRequest, prompt_tokens: int) -> int:
        window = self.engine.context_window
        room = window - prompt_tokens
        if room <= 0:
            raise APIError(
                f"This model's maximum context length is {window} tokens; the messages alone take "
                f"{prompt_tokens} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        wanted = request.requested_max_tokens
        if wanted is None:
            return room
        if wanted > room and request.context_length_exceeded_behavior == "error":
            raise APIError(
                f"This model's maximum context length is {window} tokens; you requested "
                f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, "
                f"{wanted} for the completion).",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return min(wanted, room)

    def _sampling_params(self, request: ChatCompletionRequest) -> SamplingParams:
        bias: dict[int, float] = {}
        for key, value in (request.logit_bias or {}).items():
            try:
                token_id = int(key)
            except ValueError:
                token_id = -1
            if not 0 <= token_id < self.info.vocab_size:
                raise APIError(
                    f"invalid logit_bias key {key!r}: must be a token id in [0, {self.info.vocab_size})",
                    param="logit_bias",
                    code="invalid_value",
                )
            bias[token_id] = value
        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=max(request.top_k, 0),
            min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            logit_bias=bias,
            seed=request.seed,
        )

    async def _grammar(self, request: ChatCompletionRequest) -> Grammar | None:
        found = output_constraint(request)
        if found is None:
            return None
        constraint, param = found
        return await self.compile(lambda: constraint.compile(self.compiler), param)

    async def compile(self, build, param: str) -> Grammar:
        """Compile off the event loop, within the compile time budget; errors become 400s naming `param`."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(build), self.compile_timeout_s)
        except constraints.CONSTRAINT_ERRORS as exc:
            raise api_error(exc, param) from None
        except TimeoutError:
            raise APIError(
                f"compiling the constraint took longer than {self.compile_timeout_s:g} s",
                param=param,
                code="compile_timeout",
            ) from None

    # ------------------------------------------------------------------ engine -> response
    def submit(self, request: GenerationRequest) -> tuple[RequestHandle, asyncio.Queue[Event]]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        handle = self.engine.submit(
            request, lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        )
        return handle, events

    async def next_event(
        self,
        events: asyncio.Queue[Event],
        deadline: float,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> Event:
        """The next engine event; raises `APIError` past the request deadline (504) or when the client is
        gone (499), so the caller cancels the request and its batch slots are freed at the next step."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise APIError(
                    f"the request took longer than {self.request_timeout_s:g} s",
                    status=504,
                    type="server_error",
                    code="request_timeout",
                )
            try:
                return await asyncio.wait_for(events.get(), timeout=min(1.0, remaining))
            except TimeoutError:
                if disconnected is not None and await disconnected():
                    raise APIError(
                        "the client closed the request", status=499, code="client_closed"
                    ) from None

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.request_timeout_s

    async def complete(
        self, prepared: PreparedChat, disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> ChatCompletion:
        request, generation, plan = prepared.request, prepared.generation, prepared.tools
        handle, events = self.submit(generation)
        deadline = self.deadline()
        texts = [""] * generation.n
        logprobs: list[list[TokenLogprobOut]] = [[] for _ in range(generation.n)]
        reasons = ["stop"] * generation.n
        try:
            while True:
                event = await self.next_event(events, deadline, disconnected)
                if isinstance(event, ChoiceDelta):
                    texts[event.index] += event.text
                    logprobs[event.index].extend(self._logprobs(event.logprobs))
                elif isinstance(event, ChoiceFinished):
                    reasons[event.index] = event.finish_reason
                elif isinstance(event, RequestFailed):
                    raise generation_failed(event.message, event.limit)
                elif isinstance(event, RequestFinished):
                    usage = _usage(event)
                    break
        finally:
            handle.cancel()
        choices = []
        for i in range(generation.n):
            thinking = None
            if generation.reasoning is not None:
                thinking, texts[i] = split_reasoning(texts[i], generation.reasoning)
            message, reason = _message(texts[i], reasons[i], plan)
            message.reasoning_content = thinking
            choices.append(
                Choice(
                    index=i,
                    message=message,
                    logprobs=ChoiceLogprobs(content=logprobs[i]) if request.logprobs else None,
                    finish_reason=reason,
                )
            )
        return ChatCompletion(
            id=_completion_id(),
            created=int(time.time()),
            model=self.model_id,
            system_fingerprint=self.system_fingerprint,
            choices=choices,
            usage=usage,
        )

    async def stream(self, prepared: PreparedChat) -> AsyncIterator[str]:
        request, generation, plan = prepared.request, prepared.generation, prepared.tools
        handle, events = self.submit(generation)
        deadline = self.deadline()
        completion_id, created = _completion_id(), int(time.time())
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=self.model_id,
                system_fingerprint=self.system_fingerprint,
                choices=choices,
                usage=usage,
            )
            data = body.model_dump(
                mode="json", exclude={"usage"} if usage is None and not include_usage else None
            )
            for choice, raw in zip(choices, data["choices"], strict=True):
                raw["delta"] = choice.delta.model_dump(exclude_none=True)
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        parsers = [call_parser(plan) for _ in range(generation.n)]
        splitters = [
            ReasoningSplitter(generation.reasoning) if generation.reasoning is not None else None
            for _ in range(generation.n)
        ]

        def content_deltas(index: int, pieces: list[tuple[str, str]]) -> list[DeltaMessage]:
            """Reasoning pieces as `reasoning_content`; the answer as content or tool-call deltas."""
            deltas = []
            for kind, text in pieces:
                if kind == "reasoning":
                    deltas.append(DeltaMessage(reasoning_content=text))
                elif parsers[index] is None:
                    deltas.append(DeltaMessage(content=text))
                else:
                    deltas.extend(_deltas(parsers[index].feed(text)))
            return deltas

        try:
            for i in range(generation.n):
                first = DeltaMessage(role="assistant", content=None if parsers[i] is not None else "")
                yield chunk([ChunkChoice(index=i, delta=first)])
            while True:
                try:
                    event = await self.next_event(events, deadline)
                except APIError as error:
                    yield f"data: {json.dumps(error.body())}\n\n"
                    break
                if isinstance(event, ChoiceDelta):
                    lp = ChoiceLogprobs(content=self._logprobs(event.logprobs)) if request.logprobs else None
                    splitter = splitters[event.index]
                    pieces = splitter.feed(event.text) if splitter else [("content", event.text)]
                    deltas = content_deltas(event.index, pieces)
                    if not deltas and lp is not None:  # text held back: the logprobs still go out
                        deltas = [DeltaMessage()]
                    for k, delta in enumerate(deltas):
                        yield chunk([ChunkChoice(index=event.index, delta=delta, logprobs=None if k else lp)])
                elif isinstance(event, ChoiceFinished):
                    reason = event.finish_reason
                    splitter = splitters[event.index]
                    for delta in content_deltas(event.index, splitter.finish() if splitter else []):
                        yield chunk([ChunkChoice(index=event.index, delta=delta)])
                    parser = parsers[event.index]
                    if parser is not None:
                        for delta in _deltas(parser.finish()):
                            yield chunk([ChunkChoice(index=event.index, delta=delta)])
                        if parser.complete and reason == "stop":
                            reason = "tool_calls"
                    yield chunk([ChunkChoice(index=event.index, delta=DeltaMessage(), finish_reason=reason)])
                elif isinstance(event, RequestFailed):
                    error = generation_failed(event.message, event.limit)
                    yield f"data: {json.dumps(error.body())}\n\n"
                    break
                elif isinstance(event, RequestFinished):
                    if include_usage:
                        yield chunk([], usage=_usage(event))
                    break
            yield "data: [DONE]\n\n"
        finally:
            handle.cancel()

    def _logprobs(self, items: list[TokenLogprob]) -> list[TokenLogprobOut]:
        return [
            TokenLogprobOut(
                **self._top(item.token_id, item.logprob).model_dump(),
                top_logprobs=[self._top(token_id, logprob) for token_id, logprob in item.top],
            )
            for item in items
        ]

    def _top(self, token_id: int, logprob: float) -> TopLogprob:
        data = self.info.token_bytes[token_id]
        token = data.decode("utf-8", errors="backslashreplace") or self.tokenizer.convert_ids_to_tokens(
            token_id
        )
        return TopLogprob(token=token, logprob=max(logprob, -9999.0), bytes=list(data))


def _message(text: str, reason: str, plan: constraints.ToolPlan | None) -> tuple[AssistantMessage, str]:
    """The assistant message of a finished choice: its tool calls when the output is calls, else text."""
    parser = call_parser(plan)
    if parser is None:
        return AssistantMessage(content=text), reason
    parser.feed(text)
    parser.finish()
    if not parser.complete:
        return AssistantMessage(content=text), reason
    message = AssistantMessage(content=None, tool_calls=parser.tool_calls())
    return message, "tool_calls" if reason == "stop" else reason


def _deltas(items: list[tuple[str, object]]) -> list[DeltaMessage]:
    return [
        DeltaMessage(content=value) if kind == "content" else DeltaMessage(tool_calls=[value])
        for kind, value in items
    ]


def _usage(event: RequestFinished) -> Usage:
    return Usage(
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        total_tokens=event.prompt_tokens + event.completion_tokens,
    )


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"
