"""The constraint layer (`constrained.constraints`, `constrained.tool_calls`): each spec's grammar accepts
exactly its language (concrete texts through a `Matcher`), tool plans and their errors, the call parser."""

from __future__ import annotations

import pytest

from constrained.constraints import (
    CONSTRAINT_ERRORS,
    NO_ARGUMENTS,
    Choice,
    ConstraintError,
    JsonObject,
    JsonSchema,
    Regex,
    TextGrammar,
    Tools,
    ToolSpec,
    tool_entries,
)
from constrained.grammar import Grammar, GrammarCompiler, GrammarError
from constrained.tokenizer_info import TokenizerInfo
from constrained.tool_calls import CallParser, call_text
from grammars import GrammarSyntaxError, InvalidSchemaError, SchemaError

COUNT = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 1}},
    "required": ["n"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = (ToolSpec("get_time", "Time in a zone.", TIME, strict=True), ToolSpec("ping"))
UNIQUE = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer))


@pytest.fixture(scope="module")
def accepts(tokenizer):
    def accepts(grammar: Grammar, text: str) -> bool:
        """Whether `text` is a complete output of `grammar`."""
        matcher = grammar.matcher()
        return matcher.accept_tokens(tokenizer.encode(text, add_special_tokens=False)) and (
            matcher.can_terminate()
        )

    return accepts


# ---------------------------------------------------------------------------------------------- outputs
OUTPUTS = [
    (JsonSchema(COUNT), ['{"n": 3}', '{"n":12}'], ['{"n": 0}', "{}", '{"n": 3, "m": 1}', '{"n": 3']),
    (JsonObject(), ['{"a": [1, {"b": null}]}', "{}"], ["[1]", '"x"', "{"]),
    (Regex("[0-9]{2}-[a-z]+"), ["12-ab", "00-z"], ["1-ab", "12-", "12-AB"]),
    (Choice(("red", "a|b", "(x)")), ["red", "a|b", "(x)"], ["re", "a", "redred", "x", ""]),
    (TextGrammar('start: "a"+ "b"'), ["ab", "aaab"], ["b", "aa", "aba"]),
    (TextGrammar('root ::= "x" [0-9]', "gbnf"), ["x5"], ["x", "x55", "5"]),
]


@pytest.mark.parametrize(("constraint", "good", "bad"), OUTPUTS, ids=lambda v: type(v).__name__)
def test_output_constraints_accept_exactly_their_language(compiler, accepts, constraint, good, bad):
    constraint.check()
    grammar = constraint.compile(compiler)
    assert constraint.compile(compiler) is grammar  # cached by the compiler
    for text in good:
        assert accepts(grammar, text), text
    for text in bad:
        assert not accepts(grammar, text), text


def test_json_schema_is_checked_then_enforced_exactly(compiler):
    invalid = JsonSchema({"type": "strin"})
    for run in (invalid.check, lambda: invalid.compile(compiler)):
        with pytest.raises(InvalidSchemaError):
            run()
    unsupported = JsonSchema(UNIQUE, name="tags", strict=False)  # strict does not relax an output schema
    for run in (unsupported.check, lambda: unsupported.compile(compiler)):
        with pytest.raises(SchemaError, match="uniqueItems"):
            run()


def test_bad_output_specs_raise_constraint_errors(compiler):
    with pytest.raises(ConstraintError, match="at least one option"):
        Choice(())
    with pytest.raises(ConstraintError, match="unknown grammar syntax 'ebnf'"):
        TextGrammar('start: "a"', "ebnf")
    with pytest.raises(GrammarSyntaxError, match="left recursion"):
        TextGrammar('start: a\na: b\nb: a | "x"\n').check()
    with pytest.raises(GrammarError):
        Regex(r"(a)\1").compile(compiler)
    assert issubclass(ConstraintError, ValueError)
    assert all(issubclass(kind, ValueError) for kind in CONSTRAINT_ERRORS)


# ---------------------------------------------------------------------------------------------- tools
BAD_TOOLS = [
    (Tools((ToolSpec("a"), ToolSpec("a"))), "tools[1].function.name", "duplicate_tool_name"),
    (Tools((ToolSpec("a"),), function="b"), "tool_choice", "unknown_tool"),
    (Tools((), choice="required"), "tool_choice", "invalid_value"),
    (Tools(()), "tools", "invalid_value"),
    (Tools((ToolSpec("a"),), choice="sometimes"), "tool_choice", "invalid_value"),
    (Tools((ToolSpec("a"),), choice="auto", function="a"), "tool_choice", "invalid_value"),
    (Tools((ToolSpec("bad name"),)), "tools[0].function.name", "invalid_value"),
    (
        Tools((ToolSpec("a"), ToolSpec("b", parameters={"type": "array"}))),
        "tools[1].function.parameters",
        "invalid_function_parameters",
    ),
]


@pytest.mark.parametrize(("tools", "param", "code"), BAD_TOOLS)
def test_bad_tool_specs_name_the_field(tools, param, code):
    with pytest.raises(ConstraintError) as info:
        tools.plan()
    assert (info.value.param, info.value.code) == (param, code)


@pytest.mark.parametrize(
    ("tool", "code", "words"),
    [
        (ToolSpec("a", parameters={"properties": {"x": {"type": "strin"}}}), "invalid_schema", "/properties"),
        (ToolSpec("a", parameters=UNIQUE, strict=True), "unsupported_schema", "uniqueItems"),
    ],
)
def test_arguments_errors(compiler, tool, code, words):
    for run in (Tools((tool,)).check, lambda: Tools((tool,)).compile(compiler)):
        with pytest.raises(ConstraintError) as info:
            run()
        assert (info.value.param, info.value.code) == ("tools[0].function.parameters", code)
        assert words in info.value.message


def test_non_strict_unenforceable_parameters_take_any_object(compiler, accepts):
    grammar = Tools((ToolSpec("tag", parameters=UNIQUE),), "required").compile(compiler)
    assert accepts(grammar, call_text("tag", '{"anything": [1, "x"]}'))
    assert not accepts(grammar, call_text("tag", "[1]"))


def test_required_calls_only_offered_tools_with_valid_arguments(compiler, accepts):
    single = Tools(TOOLS, "required", parallel=False).compile(compiler)
    parallel = Tools(TOOLS, "required").compile(compiler)
    time, ping = call_text("get_time", '{"zone": "UTC"}'), call_text("ping", "{}")
    for grammar in (single, parallel):
        assert accepts(grammar, time) and accepts(grammar, ping)
        for bad in [
            call_text("get_time", '{"zone": "utc"}'),
            call_text("get_time", "{}"),
            call_text("ping", '{"x": 1}'),
            call_text("evil", "{}"),
            "Hello",
            "",
        ]:
            assert not accepts(grammar, bad), bad
    assert accepts(parallel, f"{time}\n{ping}\n{time}")
    assert not accepts(single, f"{time}\n{ping}")


def test_named_function_is_the_only_callable(compiler, accepts):
    grammar = Tools(TOOLS, function="ping").compile(compiler)
    assert accepts(grammar, call_text("ping", "{}"))
    assert not accepts(grammar, call_text("get_time", '{"zone": "UTC"}'))


def test_auto_allows_text_that_does_not_start_a_call(compiler, accepts):
    grammar = Tools(TOOLS).compile(compiler)
    for text in ["", "Hello", "<tool", "<toolbox>", " <tool_call>", call_text("ping", "{}")]:
        assert accepts(grammar, text), text
    for text in ["<tool_call>", "<tool_call>\nhello", call_text("evil", "{}")]:
        assert not accepts(grammar, text), text


def test_text_constraint_under_each_tool_choice(compiler, accepts):
    text = JsonSchema(COUNT).compile(compiler)
    auto = Tools(TOOLS).compile(compiler, text)
    assert accepts(auto, '{"n": 2}') and accepts(auto, call_text("ping", "{}"))
    assert not accepts(auto, "Hello") and not accepts(auto, '{"n": 0}')
    required = Tools(TOOLS, "required").compile(compiler, text)
    assert not accepts(required, '{"n": 2}') and accepts(required, call_text("ping", "{}"))
    assert Tools(TOOLS, "none").compile(compiler, text) is text
    assert Tools(TOOLS, "none").compile(compiler) is None


def test_arguments_follow_the_schema_property_order(compiler, accepts):
    schema = {
        "type": "object",
        "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "boolean"}},
        "required": ["zeta", "alpha"],
    }
    grammar = Tools((ToolSpec("f", parameters=schema),), "required").compile(compiler)
    assert accepts(grammar, call_text("f", '{"zeta": 1, "alpha": true}'))
    assert not accepts(grammar, call_text("f", '{"alpha": true, "zeta": 1}'))


def test_tool_spec_from_openai():
    raw = {"type": "function", "function": {"name": "get_time", "description": "Time in a zone."}}
    assert (
        ToolSpec.from_openai({**raw, "function": {**raw["function"], "parameters": TIME, "strict": True}})
        == (TOOLS[0])
    )
    bad = [
        ({"type": "retrieval"}, "tools[2]"),
        ({"type": "function", "function": "f"}, "tools[2].function"),
        ({"type": "function", "function": {"description": "x"}}, "tools[2].function.name"),
        ({"type": "function", "function": {"name": "f", "strict": "yes"}}, "tools[2].function.strict"),
        ({"type": "function", "function": {"name": "f", "parameters": []}}, "tools[2].function.parameters"),
        ({"type": "function", "function": {"name": "f", "extra": 1}}, "tools[2].function.extra"),
        ({**raw, "extra": 1}, "tools[2]"),
    ]
    for value, param in bad:
        with pytest.raises(ConstraintError) as info:
            ToolSpec.from_openai(value, 2)
        assert info.value.param == param, value


def test_tool_entries_show_parameters_as_enforced():
    loose = ToolSpec("loose", parameters={"properties": {"q": {"type": "string"}}})
    assert tool_entries([TOOLS[1], loose]) == [
        {"type": "function", "function": {"name": "ping", "parameters": NO_ARGUMENTS}},
        {
            "type": "function",
            "function": {
                "name": "loose",
                "parameters": {"properties": {"q": {"type": "string"}}, "type": "object"},
            },
        },
    ]


# ---------------------------------------------------------------------------------------------- parser
def test_parser_without_text_reports_non_calls_as_content():
    parser = CallParser(text_allowed=False)
    assert parser.feed("Hello") == [("content", "Hello")]
    assert parser.finish() == [] and not parser.complete and parser.calls == []


def test_parser_of_a_cut_call_is_not_complete():
    text = call_text("get_time", '{"zone": "UTC"}')
    parser = CallParser(text_allowed=True)
    items = parser.feed(text[:-5])
    assert items[0][0] == "tool_call" and items[0][1]["function"] == {"name": "get_time", "arguments": ""}
    assert parser.calls[0].arguments == '{"zone": "UTC"}'
    parser.finish()
    assert not parser.complete


def test_parser_calls_and_deltas_agree():
    text = call_text("get_time", '{"zone": "UTC"}') + "\n" + call_text("ping", "{}")
    parser = CallParser(text_allowed=True)
    items = [item for c in text for item in parser.feed(c)] + parser.finish()
    assert parser.complete and parser.content == ""
    assert [(c.name, c.arguments) for c in parser.calls] == [("get_time", '{"zone": "UTC"}'), ("ping", "{}")]
    streamed: dict[int, str] = {}
    for kind, delta in items:
        assert kind == "tool_call"
        streamed[delta["index"]] = streamed.get(delta["index"], "") + delta["function"]["arguments"]
    assert streamed == {0: '{"zone": "UTC"}', 1: "{}"}
    assert [d["id"] for _, d in items if "id" in d] == [c.id for c in parser.calls]
