"""The tool-call text format (Hermes / Qwen 2.5 style): its regexes, the prompt that teaches it, its parser.

Every model writes calls the same way:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Parallel calls are such blocks joined by one newline (`CALL_SEPARATOR`).

Contract:
- `tool_regex(calls, parallel, text)` is the regex of a whole answer: one call (`call_regex(name, arguments)`
  for each `(name, arguments regex)` of `calls`), or several newline-joined when `parallel`; with `text` (a
  regex) the answer may instead be a text matching it. `not_starting_with(TRIGGER)` is every text that does
  not begin a call (the text alternative when nothing else constrains it). Which tools, which arguments
  grammars and which text come from `constrained.constraints` (`Tools`, `build_tool_grammar`).
- `render_prompt(tokenizer, messages, tools)` renders a conversation: `messages` are OpenAI chat messages as
  dicts with string `content` (`role`, `content`, `tool_calls`, `tool_call_id`, `name`; `developer` is
  rendered as `system`), `tools` the OpenAI function dicts the model is offered
  (`constrained.constraints.tool_entries`). A chat template that supports tools (it mentions `tools`: Qwen,
  Hermes...) receives them natively (call arguments as JSON values). Otherwise (the embedded SmolLM2) the
  tools are described in the system message (appended to the first system message, or a new one) in the
  words of Qwen 2.5's template (`TOOLS_PROMPT`); an assistant turn with `tool_calls` is rendered as its
  text followed by its call blocks, and consecutive `tool` messages as one user turn of
  `<tool_response>\\n...\\n</tool_response>` blocks.
- `CallParser(text_allowed)` splits one output, as it arrives, into content and OpenAI tool-call deltas
  (`feed`, `finish`); `calls` holds the parsed calls (`id`, `name`, `arguments` text) and `complete` says
  whether the output is whole calls and nothing else. The same parser serves streamed and whole answers, so
  both agree. An output that does not parse as calls (only possible when a stop sequence cuts a call) comes
  out as content.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grammars.regex import lit

TRIGGER = "<tool_call>"
CALL_HEAD = TRIGGER + '\n{"name": "'
ARGUMENTS_KEY = '", "arguments": '
CALL_TAIL = "}\n</tool_call>"
CALL_SEPARATOR = "\n"
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


# ---------------------------------------------------------------------------------------------- regexes
def call_regex(name: str, arguments: str) -> str:
    """One call block of tool `name` whose arguments match the regex `arguments`."""
    return lit(CALL_HEAD + name + ARGUMENTS_KEY) + f"(?:{arguments})" + lit(CALL_TAIL)


def not_starting_with(trigger: str) -> str:
    """Regex of every text that does not begin with `trigger` (the empty text and its prefixes included)."""
    rx = ""
    for c in reversed(trigger):
        diverge = f"[^{_class_escape(c)}]{ANY_TEXT}"
        rx = f"(?:{diverge}|{lit(c)}{rx})?" if rx else f"(?:{diverge})?"
    return rx


def _class_escape(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def tool_regex(calls: Sequence[tuple[str, str]], parallel: bool, text: str | None = None) -> str:
    """The whole answer: calls to the `(name, arguments regex)` tools, or (when `text` is given) a text."""
    one = "|".join(call_regex(name, arguments) for name, arguments in calls)
    answer = f"(?:{one})" + (f"(?:{lit(CALL_SEPARATOR)}(?:{one}))*" if parallel else "")
    return answer if text is None else f"(?:{answer})|(?:{text})"


# ---------------------------------------------------------------------------------------------- prompt
def template_supports_tools(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


def call_text(name: str, arguments: str) -> str:
    """One call block as the model writes it (arguments re-serialized when they are JSON)."""
    try:
        arguments = json.dumps(json.loads(arguments), ensure_ascii=False)
    except json.JSONDecodeError:
        pass
    return f"{CALL_HEAD}{name}{ARGUMENTS_KEY}{arguments}{CALL_TAIL}"


def render_prompt(
    tokenizer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()
) -> str:
    """The prompt text of `messages` and `tools` (see the module docstring), generation prompt included."""
    if template_supports_tools(tokenizer):
        extra = {"tools": list(tools)} if tools else {}
        native = [_native_message(m) for m in messages]
        return tokenizer.apply_chat_template(native, add_generation_prompt=True, tokenize=False, **extra)
    plain = default_messages(messages, tools)
    return tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)


def _role(message: Mapping[str, Any]) -> str:
    return "system" if message["role"] == "developer" else message["role"]


def _arguments_value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def _native_message(message: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _role(message), "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": _arguments_value(call["function"]["arguments"]),
                },
            }
            for call in message["tool_calls"]
        ]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    if message.get("name"):
        out["name"] = message["name"]
    return out


def default_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """The conversation in the default format: role/content pairs any chat template renders."""
    out: list[dict[str, str]] = []
    names = {c["id"]: c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()}
    for message in messages:
        role, content = _role(message), message.get("content") or ""
        if role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("tool"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool": names.get(message["tool_call_id"], "")})
            continue
        if message.get("tool_calls"):
            calls = CALL_SEPARATOR.join(
                call_text(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]
            )
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": role, "content": content})
    if tools:
        block = TOOLS_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
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
class ParsedCall:
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
    calls: list[ParsedCall] = field(default_factory=list)
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
            self.calls.append(ParsedCall(new_call_id(), self._buf[:end]))
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
