"""A request's constraint as vLLM carries it: `vllm_xargs` (`SamplingParams.extra_args`) to and from a spec.

vLLM's `vllm_xargs` carries only scalars, so every value is a string (OpenAI SDK:
`extra_body={"vllm_xargs": {...}}`; offline: `SamplingParams.extra_args`):

- `constrained_schema`: a JSON Schema as JSON text (what `response_format.json_schema.schema` holds);
- `constrained_json_object`: any non-empty value = any JSON object (`response_format: json_object`);
- `constrained_regex`: a regular expression the whole output must match;
- `constrained_grammar`: a context-free grammar the output must derive from, in Lark syntax (vLLM's
  `structured_outputs.grammar`) or GBNF with `constrained_grammar_syntax: "gbnf"`;
- `constrained_tools`: the OpenAI `tools` list as JSON text, with `constrained_tool_choice` ("auto",
  "required" or a function name; default "auto") and `constrained_parallel_tool_calls` ("true"/"false",
  default "true"): the Hermes `<tool_call>` grammar of `constrained.constraints.Tools` ("none" leaves the
  output unconstrained). Send the same `tools` to vLLM with `tool_choice: "none"` so its chat template puts
  them in the prompt without vLLM constraining anything.

Do not also send vLLM's own `response_format` / `structured_outputs` for the same request: its backend would
intersect its grammar with ours.

Contract:
- `spec_from_extra_args(extra_args)` reads a request's `ConstraintSpec` (None: the request has none;
  `ValueError` for malformed arguments or more than one kind). `ConstraintSpec.constraint()` is its
  `constrained.constraints` value, through which it is checked (`check`, at admission) and compiled
  (`compile`), exactly as the server's constraints are.
- `xargs_for(response_format=..., tools=..., tool_choice=..., grammar=...)` builds the `vllm_xargs` from
  OpenAI-shaped arguments (client side; no vLLM needed).
The processors that read these specs are in `constrained.vllm_backend`, which re-exports this module's names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from constrained.constraints import (
    TOOL_CHOICES,
    Constraint,
    JsonObject,
    JsonSchema,
    Regex,
    TextGrammar,
    Tools,
    ToolSpec,
)
from constrained.grammar import GRAMMAR_SYNTAXES, Grammar, GrammarCompiler

XARG_SCHEMA = "constrained_schema"
XARG_JSON_OBJECT = "constrained_json_object"
XARG_REGEX = "constrained_regex"
XARG_GRAMMAR = "constrained_grammar"
XARG_GRAMMAR_SYNTAX = "constrained_grammar_syntax"
XARG_TOOLS = "constrained_tools"
XARG_TOOL_CHOICE = "constrained_tool_choice"
XARG_PARALLEL = "constrained_parallel_tool_calls"


@dataclass(frozen=True)
class ConstraintSpec:
    """What one request asks for, parsed from its `extra_args` (`vllm_xargs`)."""

    kind: str  # "json_schema" | "json_object" | "regex" | "grammar" | "tools"
    source: str  # JSON text of the schema / the tools, the regex, or the grammar text
    tool_choice: str = "auto"
    parallel: bool = True
    syntax: str = "lark"  # of a grammar: "lark" | "gbnf"

    def constraint(self) -> Constraint:
        """The constraint layer's value of this spec (`ValueError` for malformed tools)."""
        if self.kind == "json_schema":
            return JsonSchema(json.loads(self.source))
        if self.kind == "json_object":
            return JsonObject()
        if self.kind == "regex":
            return Regex(self.source)
        if self.kind == "grammar":
            return TextGrammar(self.source, self.syntax)
        tools = tuple(ToolSpec.from_openai(t, i) for i, t in enumerate(json.loads(self.source)))
        if self.tool_choice in TOOL_CHOICES:
            return Tools(tools, choice=self.tool_choice, parallel=self.parallel)
        return Tools(tools, function=self.tool_choice, parallel=self.parallel)

    def compile(self, compiler: GrammarCompiler) -> Grammar | None:
        """The grammar (None: the output is not constrained, tool_choice "none")."""
        return self.constraint().compile(compiler)

    def check(self) -> None:
        """What needs no tokenizer (schema → rules, grammar text → rules, tools), raising a ValueError
        naming the problem."""
        self.constraint().check()


def spec_from_extra_args(extra_args: Mapping[str, Any] | None) -> ConstraintSpec | None:
    """The request's constraint, or None when it has none; ValueError for malformed arguments."""
    if not extra_args:
        return None
    kinds = (XARG_SCHEMA, XARG_JSON_OBJECT, XARG_REGEX, XARG_GRAMMAR, XARG_TOOLS)
    given = [key for key in kinds if extra_args.get(key)]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(f"give at most one of {', '.join(given)}")
    key = given[0]
    value = extra_args[key]
    if key == XARG_JSON_OBJECT:
        return ConstraintSpec("json_object", "")
    if key == XARG_REGEX:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        return ConstraintSpec("regex", value)
    if key == XARG_GRAMMAR:
        syntax = extra_args.get(XARG_GRAMMAR_SYNTAX) or "lark"
        if not isinstance(value, str) or syntax not in GRAMMAR_SYNTAXES:
            raise ValueError(f"{key} must be a string and {XARG_GRAMMAR_SYNTAX} 'lark' or 'gbnf'")
        return ConstraintSpec("grammar", value, syntax=syntax)
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON: {exc}") from None
    if key == XARG_SCHEMA:
        if not isinstance(parsed, dict | bool):
            raise ValueError(f"{key} must be a JSON Schema (an object or a boolean)")
        return ConstraintSpec("json_schema", json.dumps(parsed))  # key order kept: it is the output order
    if not isinstance(parsed, list) or not parsed:
        raise ValueError(f"{key} must be a non-empty list of tools")
    choice = str(extra_args.get(XARG_TOOL_CHOICE) or "auto")
    parallel = str(extra_args.get(XARG_PARALLEL, "true")).lower() not in ("false", "0", "no")
    return ConstraintSpec("tools", json.dumps(parsed), choice, parallel)


def xargs_for(
    *,
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    parallel_tool_calls: bool = True,
    grammar: str | None = None,
    grammar_syntax: str = "lark",
) -> dict[str, str]:
    """`vllm_xargs` for OpenAI-shaped `response_format` / `tools`, or a `grammar` in `grammar_syntax`
    ("lark", as vLLM's `structured_outputs.grammar`, or "gbnf") (client side; no vLLM needed)."""
    xargs: dict[str, str] = {}
    if grammar is not None:
        TextGrammar(grammar, grammar_syntax)  # ValueError for an unknown syntax
        xargs[XARG_GRAMMAR] = grammar
        xargs[XARG_GRAMMAR_SYNTAX] = grammar_syntax
    elif tools:
        xargs[XARG_TOOLS] = json.dumps(list(tools))
        if isinstance(tool_choice, Mapping):
            tool_choice = tool_choice["function"]["name"]
        xargs[XARG_TOOL_CHOICE] = tool_choice or "auto"
        xargs[XARG_PARALLEL] = "true" if parallel_tool_calls else "false"
    elif response_format is not None:
        kind = response_format.get("type")
        if kind == "json_schema":
            xargs[XARG_SCHEMA] = json.dumps(response_format["json_schema"]["schema"])
        elif kind == "json_object":
            xargs[XARG_JSON_OBJECT] = "1"
        elif kind != "text":
            raise ValueError(f"unknown response_format type {kind!r}")
    return xargs
