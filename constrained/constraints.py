"""Constraints: what the output must be, as plain values, and the one way each becomes a `Grammar`.

Every surface goes through here: the server maps a chat request onto these values, the `transformers`
processors (`constrained.hf`) and the vLLM logits processor (`constrained.vllm_backend`; its request
arguments are read by `constrained.vllm_xargs`) map their arguments onto them; none of them derives a
grammar by itself. Nothing here knows HTTP or vLLM.

Contract:
- Output constraints are frozen values of plain data: `JsonSchema(schema, name=None, strict=None)`,
  `JsonObject()`, `Regex(pattern)`, `Choice(options)` (exactly one of the strings), `TextGrammar(text,
  syntax)` (a context-free grammar, "lark" from rule `start` or "gbnf" from rule `root`). `compile(compiler)`
  returns the `Grammar` (blocking; the `GrammarCompiler` caches it); `check()` does what needs no tokenizer
  and raises what `compile` would, short of the automaton (a regex is parsed only then). A JSON Schema is
  checked against its meta-schema (`grammars.InvalidSchemaError`), then enforced exactly or rejected
  (`grammars.SchemaError` naming keyword and JSON pointer); `name` and `strict` are OpenAI's
  `response_format` fields, kept as given: nothing is relaxed either way. A grammar text the compiler cannot
  enforce raises `grammars.GrammarSyntaxError` naming the rule; an automaton that cannot be built,
  `constrained.grammar.GrammarError`.
- Function calling: `Tools(tools, choice, function, parallel)` over `ToolSpec`s (an OpenAI function tool;
  `ToolSpec.from_openai` reads one from its JSON shape). `plan()` validates it into a `ToolPlan`;
  `compile(compiler, text)` (= `build_tool_grammar(compiler, tools.plan(), text)`) is the grammar of the
  whole answer in the format of `constrained.tool_calls`, where `text` is the compiled output constraint of
  a text answer (None: free text). By tool choice:
  - `"none"`: `text` itself (None: the output is not constrained); the tools stay in the prompt;
  - `"required"`: one call to any offered tool (one or more, newline-joined, when `parallel`);
  - `function=N`: the same, restricted to N;
  - `"auto"` (the default): calls as for `required`, OR a text answer: one that follows `text`, or without
    it any text that does not begin with `<tool_call>`. A call started is a call constrained.
  In every call the name is one of the allowed tools and the arguments match its `parameters`, compiled like
  a `JsonSchema` (whitespace: at most one space after `{ [ , :` and before `} ]`). `strict: true` guarantees
  they validate, also outside OpenAI's strict subset when the compiler enforces the schema exactly; a
  keyword it cannot enforce is an error. Otherwise (`strict` false or omitted) the tool is constrained the
  same way, except that such a schema falls back to "any JSON object" instead of failing. Invalid JSON
  Schemas are errors either way. `parameters` must describe an object (root `type` absent, `"object"`, or a
  list containing it; `type: "object"` is then imposed); omitted, the function takes no arguments (`{}`).
  `ToolPlan.text_allowed` is what `constrained.tool_calls.CallParser` needs to parse the output;
  `tool_entries(tools)` are the tools as a chat template receives them (`tool_calls.render_prompt`).
- Errors: every error is a `ValueError`, one of `CONSTRAINT_ERRORS`. Those that belong to one field of a spec
  are `ConstraintError`, with `param` naming the field in OpenAI's request terms (`tools[1].function.name`,
  `tool_choice`) and an OpenAI error `code` (`duplicate_tool_name`, `unknown_tool`, `invalid_schema`, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from constrained.grammar import GRAMMAR_SYNTAXES, Grammar, GrammarCompiler, GrammarError
from constrained.tool_calls import TRIGGER, not_starting_with, tool_regex
from grammars import (
    GrammarSyntaxError,
    InvalidSchemaError,
    SchemaError,
    check_schema,
    compile_json_schema,
)
from grammars.gbnf import compile_gbnf
from grammars.ir import GrammarBuilder, RuleGrammar
from grammars.lark_grammar import compile_lark
from grammars.regex import lit

TOOL_CHOICES = ("none", "auto", "required")
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's function names
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


class ConstraintError(ValueError):
    """A spec that cannot become a grammar, naming the field at fault (`param`) and why (`code`)."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


CONSTRAINT_ERRORS = (ConstraintError, InvalidSchemaError, SchemaError, GrammarSyntaxError, GrammarError)


# ---------------------------------------------------------------------------------------------- output
@dataclass(frozen=True)
class JsonSchema:
    """JSON texts of instances of `schema`, properties in the schema's order."""

    schema: Mapping[str, Any] | bool
    name: str | None = None
    strict: bool | None = None

    def check(self) -> None:
        check_schema(self.schema)
        compile_json_schema(self.schema)

    def compile(self, compiler: GrammarCompiler) -> Grammar:
        check_schema(self.schema)
        return compiler.compile_json_schema(self.schema)


@dataclass(frozen=True)
class JsonObject:
    """Any JSON object (`response_format: json_object`)."""

    def check(self) -> None:
        """Nothing to check."""

    def compile(self, compiler: GrammarCompiler) -> Grammar:
        return compiler.compile_json_object()


@dataclass(frozen=True)
class Regex:
    """Texts fully matched by `pattern` (parsed as its automaton is built: `compile` raises, not `check`)."""

    pattern: str

    def check(self) -> None:
        """Nothing to check without building the automaton."""

    def compile(self, compiler: GrammarCompiler) -> Grammar:
        return compiler.compile_regex(self.pattern)


@dataclass(frozen=True)
class Choice:
    """Exactly one of `options` (taken literally)."""

    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ConstraintError("a choice needs at least one option")

    @property
    def pattern(self) -> str:
        return "|".join(f"(?:{lit(option)})" for option in self.options)

    def check(self) -> None:
        """Nothing to check: every list of strings is a valid choice."""

    def compile(self, compiler: GrammarCompiler) -> Grammar:
        return compiler.compile_regex(self.pattern)


@dataclass(frozen=True)
class TextGrammar:
    """Texts a context-free grammar derives: Lark (as vLLM's `structured_outputs.grammar`) or GBNF."""

    text: str
    syntax: str = "lark"

    def __post_init__(self) -> None:
        if self.syntax not in GRAMMAR_SYNTAXES:
            raise ConstraintError(f"unknown grammar syntax {self.syntax!r} (expected 'lark' or 'gbnf')")

    def check(self) -> None:
        (compile_lark if self.syntax == "lark" else compile_gbnf)(self.text)

    def compile(self, compiler: GrammarCompiler) -> Grammar:
        return compiler.compile_text_grammar(self.text, self.syntax)


OutputConstraint = JsonSchema | JsonObject | Regex | Choice | TextGrammar


# ---------------------------------------------------------------------------------------------- tools
@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call (OpenAI's `{"type": "function", "function": {...}}`)."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None  # None: the function takes no arguments
    strict: bool | None = None

    @classmethod
    def from_openai(cls, raw: Any, index: int = 0) -> ToolSpec:
        """The tool of an OpenAI `tools[index]` entry; `ConstraintError` naming the field when malformed."""
        where = f"tools[{index}]"
        if not isinstance(raw, Mapping) or raw.get("type") != "function" or set(raw) != {"type", "function"}:
            raise ConstraintError(f"{where} must be {{'type': 'function', 'function': {{...}}}}", param=where)
        function = raw["function"]
        if not isinstance(function, Mapping):
            raise ConstraintError(f"{where}.function must be an object", param=f"{where}.function")
        kinds = {"name": str, "description": str, "parameters": Mapping, "strict": bool}
        for key, value in function.items():
            if key not in kinds:
                raise ConstraintError(
                    f"unrecognized argument {where}.function.{key}", param=f"{where}.function.{key}"
                )
            if not isinstance(value, kinds[key]) and not (value is None and key != "name"):
                raise ConstraintError(
                    f"{where}.function.{key} must be of type {kinds[key].__name__}",
                    param=f"{where}.function.{key}",
                )
        if "name" not in function:
            raise ConstraintError(f"missing {where}.function.name", param=f"{where}.function.name")
        return cls(**function)


@dataclass(frozen=True)
class ToolPlan:
    """A validated `Tools`: which tools a call may name, and whether the answer may be text."""

    mode: str  # "none" | "auto" | "required" | "named"
    tools: tuple[ToolSpec, ...]
    allowed: tuple[int, ...]  # indices into tools of the tools a call may name
    parallel: bool

    @property
    def constrained(self) -> bool:
        """Whether the output may hold tool calls (then it is parsed into calls)."""
        return self.mode != "none"

    @property
    def text_allowed(self) -> bool:
        return self.mode in ("none", "auto")


@dataclass(frozen=True)
class Tools:
    """Function calling: the offered `tools`, the tool choice (`choice`, or `function` naming one tool) and
    whether one answer may hold several calls."""

    tools: tuple[ToolSpec, ...]
    choice: str | None = None  # "none" | "auto" | "required"; None (and no `function`): "auto"
    function: str | None = None  # the one tool every call must name
    parallel: bool = True

    def plan(self) -> ToolPlan:
        """Validate (names, tool choice, parameters' shape) into a `ToolPlan`; `ConstraintError` otherwise."""
        if not self.tools:
            if self.choice is not None or self.function is not None:
                raise ConstraintError(
                    "'tool_choice' is only allowed when 'tools' are specified", param="tool_choice"
                )
            raise ConstraintError("'tools' must hold at least one tool", param="tools")
        if self.choice is not None and (self.choice not in TOOL_CHOICES or self.function is not None):
            raise ConstraintError(
                f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or name a function",
                param="tool_choice",
            )
        seen: dict[str, int] = {}
        for i, tool in enumerate(self.tools):
            if not TOOL_NAME.fullmatch(tool.name):
                raise ConstraintError(
                    f"invalid function name {tool.name!r}: 1 to 64 letters, digits, '_' or '-'",
                    param=f"tools[{i}].function.name",
                )
            if tool.name in seen:
                raise ConstraintError(
                    f"duplicate tool name '{tool.name}' (also tools[{seen[tool.name]}])",
                    param=f"tools[{i}].function.name",
                    code="duplicate_tool_name",
                )
            seen[tool.name] = i
            parameters_schema(tool, i)  # shape check now, compilation later
        if self.function is not None:
            if self.function not in seen:
                raise ConstraintError(
                    f"tool_choice names the function '{self.function}', which is not among the tools "
                    f"({', '.join(sorted(seen))})",
                    param="tool_choice",
                    code="unknown_tool",
                )
            return ToolPlan("named", self.tools, (seen[self.function],), self.parallel)
        mode = self.choice or "auto"
        return ToolPlan(mode, self.tools, tuple(range(len(self.tools))), self.parallel)

    def check(self) -> None:
        plan = self.plan()
        for i in plan.allowed if plan.constrained else ():
            arguments_grammar(plan.tools[i], i)

    def compile(self, compiler: GrammarCompiler, text: Grammar | None = None) -> Grammar | None:
        return build_tool_grammar(compiler, self.plan(), text)


Constraint = OutputConstraint | Tools


def parameters_schema(tool: ToolSpec, index: int) -> Mapping[str, Any]:
    """The schema the arguments must match: `parameters`, with the root constrained to objects."""
    params = tool.parameters
    if params is None:
        return NO_ARGUMENTS
    kind = params.get("type")
    if kind == "object":
        return params
    if kind is None or (isinstance(kind, list) and "object" in kind):
        return {**params, "type": "object"}
    raise ConstraintError(
        f"invalid schema for function '{tool.name}': the parameters must be a JSON Schema of "
        f"type 'object', got type {json.dumps(kind)}",
        param=f"tools[{index}].function.parameters",
        code="invalid_function_parameters",
    )


@lru_cache(maxsize=512)
def _schema_grammar(schema_json: str) -> RuleGrammar:
    return compile_json_schema(json.loads(schema_json)).grammar


def arguments_grammar(tool: ToolSpec, index: int) -> RuleGrammar:
    """Grammar of the JSON texts of valid arguments; `ConstraintError` naming the parameter otherwise."""
    param = f"tools[{index}].function.parameters"
    schema = parameters_schema(tool, index)
    try:
        check_schema(schema)
    except InvalidSchemaError as exc:
        raise ConstraintError(
            f"invalid JSON schema for function '{tool.name}' at '{exc.pointer}': {exc.message}",
            param=param,
            code="invalid_schema",
        ) from None
    try:
        return _schema_grammar(json.dumps(schema))
    except SchemaError as exc:
        if tool.strict:
            raise ConstraintError(
                f"function '{tool.name}' has strict: true, but its parameters cannot be enforced "
                f"exactly: {exc}",
                param=param,
                code="unsupported_schema",
            ) from None
        return _schema_grammar(json.dumps({"type": "object"}))  # non-strict: any JSON object


def build_tool_grammar(
    compiler: GrammarCompiler, plan: ToolPlan, text: Grammar | None = None
) -> Grammar | None:
    """The grammar of the whole answer under `plan` (blocking); `text` constrains a text answer (see the
    module docstring). Raises `ConstraintError` naming the tool, `GrammarError` for the automaton."""
    if not plan.constrained:
        return text
    builder = GrammarBuilder()
    args = {i: builder.embed(arguments_grammar(plan.tools[i], i)) for i in plan.allowed}
    alternative = None
    if plan.mode == "auto":
        alternative = builder.embed(text.source) if text is not None else not_starting_with(TRIGGER)
    calls = [(plan.tools[i].name, args[i]) for i in plan.allowed]
    return compiler.compile_grammar(builder.build(tool_regex(calls, plan.parallel, alternative)))


def tool_entries(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The tools as a chat template receives them: OpenAI function dicts, `parameters` as enforced."""
    entries = []
    for i, tool in enumerate(tools):
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = parameters_schema(tool, i)
        entries.append({"type": "function", "function": function})
    return entries
