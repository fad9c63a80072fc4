"""Function calling over HTTP: OpenAI's `tools` / `tool_choice` / `parallel_tool_calls` and tool messages,
mapped onto the constraint layer (`constrained.constraints`: plan and grammar; `constrained.tool_calls`:
call format, prompt, parser), whose docstrings state the rules.

Contract:
- `plan_tools(request)` returns the request's `ToolPlan`, or None when it has neither `tools` nor
  `tool_choice`; a bad combination (duplicate names, a `tool_choice` naming an unknown tool or given without
  tools, non-object `parameters`) is a 400 `APIError` naming the parameter.
- `api_error(exc, param)` is the 400 of any constraint error (`constrained.constraints.CONSTRAINT_ERRORS`):
  a `ConstraintError` keeps its own parameter and code; otherwise `param` is named, with code
  `invalid_schema` (not a JSON Schema), `invalid_grammar` (a grammar text it cannot enforce) or
  `unsupported_schema` (a keyword it cannot enforce, an automaton it cannot build).
- `render_prompt(tokenizer, request)` renders the conversation and its tools
  (`constrained.tool_calls.render_prompt`).
- `call_parser(plan)` is a fresh `CallParser` for one choice when the plan allows calls (None otherwise):
  the layer's parser, whose `tool_calls()` are protocol `ToolCall`s.

Finishing: a choice whose output is tool calls has `message.content` null, `message.tool_calls` set and
`finish_reason: "tool_calls"`; when `max_tokens` runs out the budget-aware closing still completes the
calls, which are returned with `finish_reason: "length"`. An output that does not parse as calls (only
possible when a `stop` sequence cuts a call) is returned as content.
"""

from __future__ import annotations

from typing import Any

from constrained import tool_calls
from constrained.constraints import ConstraintError, ToolPlan, Tools, ToolSpec, tool_entries
from grammars import GrammarSyntaxError, InvalidSchemaError
from server.errors import APIError
from server.protocol import ChatCompletionRequest, FunctionCall, Message, NamedToolChoice, Tool, ToolCall


def api_error(exc: Exception, param: str | None) -> APIError:
    """The 400 of a constraint error (one of `CONSTRAINT_ERRORS`), naming `param` unless it names its own."""
    if isinstance(exc, ConstraintError):
        return APIError(exc.message, param=exc.param or param, code=exc.code)
    if isinstance(exc, InvalidSchemaError):
        code = "invalid_schema"
    elif isinstance(exc, GrammarSyntaxError):
        code = "invalid_grammar"
    else:
        code = "unsupported_schema"
    return APIError(str(exc), param=param, code=code)


def tool_spec(tool: Tool) -> ToolSpec:
    function = tool.function
    return ToolSpec(function.name, function.description, function.parameters, function.strict)


def plan_tools(request: ChatCompletionRequest) -> ToolPlan | None:
    choice = request.tool_choice
    if not request.tools and choice is None:
        return None
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    spec = Tools(
        tuple(tool_spec(t) for t in request.tools or ()),
        None if named is not None else choice,
        named,
        request.parallel_tool_calls,
    )
    try:
        return spec.plan()
    except ConstraintError as exc:
        raise api_error(exc, None) from None


def render_prompt(tokenizer, request: ChatCompletionRequest) -> str:
    messages = [_message(m) for m in request.messages]
    tools = tool_entries([tool_spec(t) for t in request.tools or ()])
    return tool_calls.render_prompt(tokenizer, messages, tools)


def _message(message: Message) -> dict[str, Any]:
    """A chat message as the layer takes it: an OpenAI message dict with string content."""
    return {
        "role": message.role,
        "content": message.text,
        "tool_calls": [call.model_dump() for call in message.tool_calls or ()],
        "tool_call_id": message.tool_call_id,
        "name": message.name,
    }


class CallParser(tool_calls.CallParser):
    """`constrained.tool_calls.CallParser` with its calls as protocol `ToolCall`s."""

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in self.calls
        ]


def call_parser(plan: ToolPlan | None) -> CallParser | None:
    """A parser for one choice's output when `plan` allows tool calls; None when the output is text."""
    return CallParser(plan.text_allowed) if plan is not None and plan.constrained else None
