"""Function calling: tools in the prompt, a grammar over the tool-call format, tool calls out of the text.

Contract:
- `plan_tools(request)` validates `tools` / `tool_choice` / `parallel_tool_calls` (400s naming the parameter:
  duplicate names, a `tool_choice` naming an unknown tool or given without tools, non-object parameters) and
  returns a `ToolPlan`, or None when the request has no tools.
- `render_prompt(tokenizer, request)` renders the conversation, tools, assistant `tool_calls` and `tool`
  results included: with the chat template when it supports tools (it mentions `tools`: Qwen, Hermes...),
  in the default format below otherwise.
- `build_tool_grammar(compiler, plan, text_regex)` compiles the grammar of the whole answer; each tool's
  arguments grammar comes from its `parameters` schema (`grammars.compile_json_schema`), embedded as rules.
- `CallParser` splits one choice's output, as it arrives, into content and OpenAI tool-call deltas; the
  same parser builds the non-streamed `message.tool_calls`, so both agree.

The call format (Hermes / Qwen 2.5 style), used for every model:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Parallel calls are such blocks joined by one newline. Without template support for tools (the embedded
SmolLM2), the tools are described in the system message (appended to the first system message, or a new
one), in the words of Qwen 2.5's template (`TOOLS_PROMPT`); an assistant turn with `tool_calls` is rendered
as its text followed by its call blocks, and consecutive `tool` messages as one user turn of
`<tool_response>\\n...\\n</tool_response>` blocks.

The grammar, by `tool_choice`:
- `none`: no tool grammar (plain text, or `response_format` when given); the tools stay in the prompt;
- `required`: one call to any offered tool (one or more, newline-joined, when `parallel_tool_calls`);
- `{"type": "function", "function": {"name": N}}`: the same, restricted to N;
- `auto` (the default when tools are given): tool calls as for `required`, OR a text answer that does not
  begin with `<tool_call>` (every first divergence from the trigger, then any text); with `response_format`
  the text answer follows it instead (JSON never begins with `<`). A call started is a call constrained.
In every call the name is one of the allowed tools and the arguments match that tool's `parameters`.

Strictness: `parameters` are compiled like a `response_format` schema (whitespace: at most one space after
`{ [ , :` and before `} ]`), whatever `strict` says. `strict: true` guarantees the arguments validate,
including schemas outside OpenAI's strict subset (optional properties, `additionalProperties` allowed,
`pattern`, `minimum`, ...) when the compiler enforces them exactly; a keyword it cannot enforce is a 400
naming the keyword (param `tools[i].function.parameters`). `strict: false` (or omitted) is constrained
exactly the same way; only a schema the compiler cannot enforce falls back to "any JSON object" for that
tool's arguments instead of failing. Invalid JSON Schemas are 400s either way. `parameters` must describe
an object (root `type` absent, `"object"`, or a list containing it; `type: "object"` is then imposed);
omitted, the function takes no arguments (`{}`).

Finishing: a choice whose output is tool calls has `message.content` null, `message.tool_calls` set and
`finish_reason: "tool_calls"`; when `max_tokens` runs out the budget-aware closing still completes the
calls, which are returned with `finish_reason: "length"`. An output that does not parse as calls (only
possible when a `stop` sequence cuts a call) is returned as content.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from constrained.grammar import Grammar, GrammarCompiler
from grammars import InvalidSchemaError, SchemaError, check_schema, compile_json_schema
from grammars.ir import GrammarBuilder, RuleGrammar
from grammars.regex import lit
from server.errors import APIError
from server.protocol import ChatCompletionRequest, FunctionCall, Message, NamedToolChoice, Tool, ToolCall

TRIGGER = "<tool_call>"
CALL_HEAD = TRIGGER + '\n{"name": "'
ARGUMENTS_KEY = '", "arguments": '
CALL_TAIL = "}\n</tool_call>"
CALL_SEPARATOR = "\n"
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
ANY_TEXT = r"[\s\S]*"  # any characters, newlines included (same meaning in Python re and Rust regex)

TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class ToolPlan:
    mode: str  # "none" | "auto" | "required" | "named"
    tools: tuple[Tool, ...]
    allowed: tuple[int, ...]  # indices into tools of the tools a call may name
    parallel: bool

    @property
    def constrained(self) -> bool:
        """Whether the output may hold tool calls (then it is parsed into `tool_calls`)."""
        return self.mode != "none"

    @property
    def text_allowed(self) -> bool:
        return self.mode in ("none", "auto")


# ---------------------------------------------------------------------------------------------- validation
def plan_tools(request: ChatCompletionRequest) -> ToolPlan | None:
    tools = tuple(request.tools or ())
    choice = request.tool_choice
    if not tools:
        if choice is not None:
            raise APIError("'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
        return None
    seen: dict[str, int] = {}
    for i, tool in enumerate(tools):
        name = tool.function.name
        if name in seen:
            raise APIError(
                f"duplicate tool name '{name}' (also tools[{seen[name]}])",
                param=f"tools[{i}].function.name",
                code="duplicate_tool_name",
            )
        seen[name] = i
        parameters_schema(tool, i)  # shape check now, compilation later
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in seen:
            raise APIError(
                f"tool_choice names the function '{name}', which is not among the tools "
                f"({', '.join(sorted(seen))})",
                param="tool_choice",
                code="unknown_tool",
            )
        return ToolPlan("named", tools, (seen[name],), request.parallel_tool_calls)
    mode = choice or "auto"
    return ToolPlan(mode, tools, tuple(range(len(tools))), request.parallel_tool_calls)


def parameters_schema(tool: Tool, index: int) -> dict[str, Any]:
    """The schema the arguments must match: `parameters`, with the root constrained to objects."""
    params = tool.function.parameters
    if params is None:
        return NO_ARGUMENTS
    kind = params.get("type")
    if kind == "object":
        return params
    if kind is None or (isinstance(kind, list) and "object" in kind):
        return {**params, "type": "object"}
    raise APIError(
        f"invalid schema for function '{tool.function.name}': the parameters must be a JSON Schema of "
        f"type 'object', got type {json.dumps(kind)}",
        param=f"tools[{index}].function.parameters",
        code="invalid_function_parameters",
    )


# ---------------------------------------------------------------------------------------------- grammar
@lru_cache(maxsize=512)
def _schema_grammar(schema_json: str) -> RuleGrammar:
    return compile_json_schema(json.loads(schema_json)).grammar


def arguments_grammar(tool: Tool, index: int) -> RuleGrammar:
    """Grammar of the JSON texts of valid arguments; 400 naming the parameter when it cannot be built."""
    param = f"tools[{index}].function.parameters"
    schema = parameters_schema(tool, index)
    try:
        check_schema(schema)
    except InvalidSchemaError as exc:
        raise APIError(
            f"invalid JSON schema for function '{tool.function.name}' at '{exc.pointer}': {exc.message}",
            param=param,
            code="invalid_schema",
        ) from None
    try:
        return _schema_grammar(json.dumps(schema))
    except SchemaError as exc:
        if tool.function.strict:
            raise APIError(
                f"function '{tool.function.name}' has strict: true, but its parameters cannot be enforced "
                f"exactly: {exc}",
                param=param,
                code="unsupported_schema",
            ) from None
        return _schema_grammar(json.dumps({"type": "object"}))  # non-strict: any JSON object


def call_regex(name: str, args_regex: str) -> str:
    return lit(CALL_HEAD + name + ARGUMENTS_KEY) + f"(?:{args_regex})" + lit(CALL_TAIL)


def not_starting_with(trigger: str) -> str:
    """Regex of every text that does not begin with `trigger` (the empty text and its prefixes included)."""
    rx = ""
    for c in reversed(trigger):
        diverge = f"[^{_class_escape(c)}]{ANY_TEXT}"
        rx = f"(?:{diverge}|{lit(c)}{rx})?" if rx else f"(?:{diverge})?"
    return rx


def _class_escape(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def tool_regex(plan: ToolPlan, args: Mapping[int, str], text_regex: str | None = None) -> str:
    """The whole answer: calls (and, under `auto`, the text alternative)."""
    one = "|".join(call_regex(plan.tools[i].function.name, args[i]) for i in plan.allowed)
    calls = f"(?:{one})" + (f"(?:{lit(CALL_SEPARATOR)}(?:{one}))*" if plan.parallel else "")
    if plan.mode != "auto":
        return calls
    text = text_regex if text_regex is not None else not_starting_with(TRIGGER)
    return f"(?:{calls})|(?:{text})"


def build_tool_grammar(compiler: GrammarCompiler, plan: ToolPlan, text: RuleGrammar | None = None) -> Grammar:
    """Compile the answer grammar (blocking; raises APIError per tool, GrammarError for the automaton).
    `text` constrains a text answer under `auto` (`response_format`)."""
    builder = GrammarBuilder()
    args = {i: builder.embed(arguments_grammar(plan.tools[i], i)) for i in plan.allowed}
    text_regex = builder.embed(text) if text is not None else None
    return compiler.compile_grammar(builder.build(tool_regex(plan, args, text_regex)))


# ---------------------------------------------------------------------------------------------- prompt
def template_supports_tools(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


def tool_spec(tool: Tool, index: int) -> dict[str, Any]:
    function = {"name": tool.function.name}
    if tool.function.description:
        function["description"] = tool.function.description
    function["parameters"] = parameters_schema(tool, index)
    return {"type": "function", "function": function}


def call_text(name: str, arguments: str) -> str:
    """One call block as the model writes it (arguments re-serialized when they are JSON)."""
    try:
        arguments = json.dumps(json.loads(arguments), ensure_ascii=False)
    except json.JSONDecodeError:
        pass
    return f"{CALL_HEAD}{name}{ARGUMENTS_KEY}{arguments}{CALL_TAIL}"


def _arguments_value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def render_prompt(tokenizer, request: ChatCompletionRequest) -> str:
    specs = [tool_spec(t, i) for i, t in enumerate(request.tools or ())]
    if template_supports_tools(tokenizer):
        messages = [_native_message(m) for m in request.messages]
        extra = {"tools": specs} if specs else {}
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
    messages = default_messages(request.messages, specs)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _native_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role}
    out["content"] = message.text
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments_value(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


def default_messages(messages: list[Message], specs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation in the default format: role/content pairs any chat template renders."""
    out: list[dict[str, str]] = []
    names = {call.id: call.function.name for m in messages for call in m.tool_calls or ()}
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        if role == "tool":
            block = f"<tool_response>\n{message.text}\n</tool_response>"
            if out and out[-1].get("tool"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool": names.get(message.tool_call_id, "")})
            continue
        content = message.text
        if message.tool_calls:
            calls = CALL_SEPARATOR.join(
                call_text(c.function.name, c.function.arguments) for c in message.tool_calls
            )
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": role, "content": content})
    if specs:
        block = TOOLS_PROMPT.format(tools="\n".join(json.dumps(s, ensure_ascii=False) for s in specs))
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block
        else:
            out.insert(0, {"role": "system", "content": block})
    return [{"role": m["role"], "content": m["content"]} for m in out]


# ---------------------------------------------------------------------------------------------- output
def new_call_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(24))


@dataclass
class _Call:
    id: str
    name: str
    arguments: str = ""


@dataclass
class CallParser:
    """Incremental parser of one choice's output into content and tool-call deltas.

    `feed(text)` returns a list of items, each either `("content", str)` or `("tool_call", delta_dict)`
    (OpenAI's streaming shape: the first delta of call i carries index, id, type, function.name and
    arguments ""; the next ones carry argument fragments). `finish()` flushes what was held back.
    """

    text_allowed: bool
    calls: list[_Call] = field(default_factory=list)
    content: str = ""
    _mode: str = ""  # "start" (undecided), "text", "calls", "broken"
    _phase: str = "open"  # in "calls": open, name, key, args, tail, between
    _buf: str = ""
    _depth: int = 0
    _in_string: bool = False
    _escape: bool = False

    def __post_init__(self) -> None:
        self._mode = "start" if self.text_allowed else "calls"

    @property
    def complete(self) -> bool:
        """The output so far is one or more whole calls and nothing else."""
        return self._mode == "calls" and self._phase == "between" and bool(self.calls)

    def feed(self, text: str) -> list[tuple[str, Any]]:
        self._buf += text
        out: list[tuple[str, Any]] = []
        if self._mode == "start":
            if TRIGGER.startswith(self._buf) and len(self._buf) < len(TRIGGER):
                return out
            self._mode = "calls" if self._buf.startswith(TRIGGER) else "text"
        if self._mode in ("text", "broken"):
            return self._content(out)
        while self._buf and self._step(out):
            pass
        if self._mode == "broken":
            return self._content(out)
        return out

    def finish(self) -> list[tuple[str, Any]]:
        """End of output: what is still held back becomes content."""
        if self._mode == "start" or (self._mode == "calls" and self._buf):
            self._mode = "broken"
        return self._content([]) if self._mode in ("text", "broken") else []

    def _content(self, out: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if self._buf:
            self.content += self._buf
            out.append(("content", self._buf))
            self._buf = ""
        return out

    def _literal(self, expected: str) -> bool | None:
        """Consume `expected` at the buffer's start: True done, None need more text, False mismatch."""
        if self._buf.startswith(expected):
            self._buf = self._buf[len(expected) :]
            return True
        if expected.startswith(self._buf):
            return None
        self._mode = "broken"
        return False

    def _step(self, out: list[tuple[str, Any]]) -> bool:
        """Advance one phase if the buffer allows; False when more text is needed (or parsing broke)."""
        phase = self._phase
        if phase in ("open", "key", "tail"):
            expected = {"open": CALL_HEAD, "key": ARGUMENTS_KEY, "tail": CALL_TAIL}[phase]
            if self._literal(expected) is not True:
                return False
            if phase == "key":
                call = self.calls[-1]
                delta = {
                    "index": len(self.calls) - 1,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                out.append(("tool_call", delta))
                self._depth, self._in_string, self._escape = 0, False, False
            self._phase = {"open": "name", "key": "args", "tail": "between"}[phase]
            return True
        if phase == "name":
            end = self._buf.find('"')
            if end < 0:
                return False
            self.calls.append(_Call(new_call_id(), self._buf[:end]))
            self._buf = self._buf[end:]
            self._phase = "key"
            return True
        if phase == "args":
            end = self._scan_arguments()
            fragment = self._buf[:end]
            if fragment:
                self.calls[-1].arguments += fragment
                out.append(("tool_call", {"index": len(self.calls) - 1, "function": {"arguments": fragment}}))
            self._buf = self._buf[end:]
            if self._buf:  # the arguments ended at the envelope's closing brace
                self._phase = "tail"
                return True
            return False
        # between calls
        if self._literal(CALL_SEPARATOR) is not True:
            return False
        self._phase = "open"
        return True

    def _scan_arguments(self) -> int:
        """Length of the buffer's prefix that belongs to the arguments (stops at the envelope's `}`)."""
        for i, c in enumerate(self._buf):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                if self._depth == 0:
                    return i
                self._depth -= 1
        return len(self._buf)

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in self.calls
        ]
