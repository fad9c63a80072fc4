"""`constrained.hf` processors inside plain `transformers` `generate`, on the random-weight adversary.

Batches of 4 rows (one schema per row, left-padded prompts of different lengths), sampled with a fixed seed:
every row that ended with EOS is a JSON instance of its schema; a row cut by the length limit is a prefix
the grammar accepted token by token. Also: the Python API (`constrained.api.Compiler`) and beam search.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pydantic
import pytest
import torch

from constrained.api import Compiler
from constrained.constraints import Choice, TextGrammar, Tools, ToolSpec
from constrained.hf import (
    ConstraintLogitsProcessor,
    GrammarLogitsProcessor,
    JSONSchemaLogitsProcessor,
    RegexLogitsProcessor,
)
from constrained.tool_calls import CallParser

SCHEMAS = [
    {"type": "boolean"},
    {"type": "null"},
    {"type": "integer", "minimum": -5, "maximum": 500},
    {"type": "number", "minimum": 0, "exclusiveMaximum": 10},
    {"type": "string", "maxLength": 8},
    {"type": "string", "format": "date"},
    {"type": "string", "pattern": "^[A-Z][a-z]{1,5}$"},
    {"enum": ["red", "green", 3, None, {"k": [1, 2]}]},
    {"const": {"a": 1}},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 5},
    {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 4},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"enum": ["x", "y"]}], "items": False},
    {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999}},
        "required": ["id"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "number"}},
        "required": ["ok"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]{2,4}$"}]},
    {"oneOf": [{"type": "boolean"}, {"type": "null"}]},
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"const": "x"}, "maxItems": 3}},
        "required": ["tags"],
        "additionalProperties": False,
    },
    {
        "$defs": {"color": {"enum": ["r", "g", "b"]}},
        "type": "object",
        "properties": {"fg": {"$ref": "#/$defs/color"}, "bg": {"$ref": "#/$defs/color"}},
        "required": ["fg", "bg"],
        "additionalProperties": False,
    },
    {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/node",
    },
    {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
    {"type": "integer", "multipleOf": 7, "minimum": 0, "maximum": 100},
    {"type": ["string", "null"], "minLength": 2, "maxLength": 3},
    {
        "type": "object",
        "properties": {"point": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}},
        "required": ["point"],
        "additionalProperties": False,
    },
]
PROMPTS = ["Answer in JSON.", "Hi", "Please produce the data, thank you very much indeed.", "Go:"]
MAX_NEW = 64


def _generate(adversary, processor, prompts, seed, **kwargs):
    tokenizer = adversary.tokenizer
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    out = adversary.model.generate(
        **batch,
        logits_processor=[processor],
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=kwargs.pop("max_new_tokens", MAX_NEW),
        **kwargs,
    )
    return out[:, batch.input_ids.shape[1] :].tolist()


def _check_rows(grammars, schemas, rows) -> int:
    """Validate every row; returns how many ended with EOS."""
    ended = 0
    for grammar, schema, tokens in zip(grammars, schemas, rows, strict=True):
        eos = grammar.info.eos_token_ids
        cut = next((i for i, t in enumerate(tokens) if t in eos), None)
        matcher = grammar.matcher()
        body = tokens if cut is None else tokens[: cut + 1]
        assert matcher.accept_tokens(body), f"a token outside the grammar for {schema}: {tokens}"
        if cut is not None:
            ended += 1
            assert matcher.is_terminated()
            text = b"".join(grammar.info.token_bytes[t] for t in tokens[:cut]).decode()
            jsonschema.validate(json.loads(text), schema)
    return ended


def test_batched_schemas_validate(adversary):
    compiler = Compiler.for_tokenizer(adversary.tokenizer)
    assert len(SCHEMAS) >= 20
    ended = total = 0
    for start in range(0, len(SCHEMAS), 4):
        schemas = SCHEMAS[start : start + 4]
        grammars = [compiler.json_schema(s) for s in schemas]
        processor = GrammarLogitsProcessor(grammars, max_new_tokens=MAX_NEW)
        rows = _generate(adversary, processor, PROMPTS[: len(schemas)], seed=start, do_sample=True)
        ended += _check_rows(grammars, schemas, rows)
        total += len(schemas)
        assert not processor.dead_rows
    assert ended >= 0.8 * total, f"only {ended} of {total} rows ended with EOS"


def test_one_schema_for_the_batch_and_processor_reuse(adversary):
    schema = SCHEMAS[14]
    processor = JSONSchemaLogitsProcessor(schema, adversary.tokenizer, max_new_tokens=48)
    grammar = processor.grammars[0]
    for seed in (1, 2):  # the second generate call resets the processor by itself
        rows = _generate(adversary, processor, PROMPTS, seed=seed, do_sample=True, max_new_tokens=48)
        assert _check_rows([grammar] * 4, [schema] * 4, rows) >= 3


def test_without_budget_rows_are_prefixes(adversary):
    schema = {"type": "array", "items": {"type": "string"}}
    processor = JSONSchemaLogitsProcessor(schema, adversary.tokenizer)  # no max_new_tokens: no closing
    rows = _generate(adversary, processor, PROMPTS, seed=3, do_sample=True, max_new_tokens=24)
    _check_rows([processor.grammars[0]] * 4, [schema] * 4, rows)


def test_regex_and_beam_search(adversary):
    processor = RegexLogitsProcessor(r"(yes|no|maybe), [0-9]{2}", adversary.tokenizer, max_new_tokens=16)
    rows = _generate(adversary, processor, PROMPTS[:2], seed=4, num_beams=3, max_new_tokens=16)
    for tokens in rows:  # beams were re-ordered between steps: each kept its own grammar state
        text = adversary.tokenizer.decode(tokens, skip_special_tokens=True)
        assert re.fullmatch(r"(yes|no|maybe), [0-9]{2}", text), text


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=6)
    kind: str = pydantic.Field(pattern="^(cat|dog)$")
    legs: int = pydantic.Field(ge=0, le=4)


def test_python_api(adversary, tokenizer):
    compiler = Compiler.for_tokenizer(tokenizer)
    assert Compiler.for_tokenizer(tokenizer) is compiler
    assert compiler.json_schema(Pet) is compiler.json_schema(Pet.model_json_schema())  # cached
    grammar = compiler.json_schema(list[int])
    matcher = grammar.matcher()
    assert matcher.accept_tokens(tokenizer.encode("[1,2]", add_special_tokens=False))
    assert matcher.can_terminate()
    letters = tokenizer.encode("a", add_special_tokens=False)
    assert not compiler.regex("[0-9]+").matcher().accept_tokens(letters)
    with pytest.raises(ValueError, match="keyword"):
        compiler.json_schema({"type": "string", "pattern": "(?=a)"})
    processor = JSONSchemaLogitsProcessor(Pet, tokenizer, max_new_tokens=40)
    rows = _generate(adversary, processor, PROMPTS, seed=5, do_sample=True, max_new_tokens=40)
    for tokens in rows:
        if tokenizer.eos_token_id in tokens:
            Pet.model_validate_json(tokenizer.decode(tokens, skip_special_tokens=True))


def test_grammar_count_must_divide_rows(adversary):
    compiler = Compiler.for_tokenizer(adversary.tokenizer)
    processor = GrammarLogitsProcessor([compiler.regex("a"), compiler.regex("b"), compiler.regex("c")])
    with pytest.raises(ValueError, match="one grammar per batch item"):
        _generate(adversary, processor, PROMPTS, seed=0, do_sample=True, max_new_tokens=2)


def _texts(tokenizer, rows: list[list[int]]) -> list[str]:
    """Each row's text up to its end-of-sequence token."""
    eos = tokenizer.eos_token_id
    return [tokenizer.decode(r[: r.index(eos)] if eos in r else r, skip_special_tokens=True) for r in rows]


def test_constraint_processor_per_batch_item_and_tools(adversary):
    tokenizer = adversary.tokenizer
    choices = ("red", "green (dark)")
    per_item = [Choice(choices), TextGrammar('root ::= "x" [0-9] [0-9]', "gbnf")]
    processor = ConstraintLogitsProcessor(per_item, tokenizer, max_new_tokens=12)
    rows = _generate(adversary, processor, PROMPTS[:2], seed=6, do_sample=True, max_new_tokens=12)
    choice, code = _texts(tokenizer, rows)
    assert choice in choices and re.fullmatch(r"x[0-9]{2}", code), (choice, code)

    weather = {
        "type": "object",
        "properties": {"city": {"enum": ["Oslo", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = Tools((ToolSpec("weather", parameters=weather), ToolSpec("ping")), "required", parallel=False)
    processor = ConstraintLogitsProcessor(tools, tokenizer, max_new_tokens=48)
    rows = _generate(adversary, processor, PROMPTS[:2], seed=7, do_sample=True, max_new_tokens=48)
    assert all(processor.outputs_complete())
    for text in _texts(tokenizer, rows):
        parser = CallParser(text_allowed=False)
        parser.feed(text)
        parser.finish()
        assert parser.complete and len(parser.calls) == 1, text
        [call] = parser.calls
        jsonschema.validate(
            json.loads(call.arguments), weather if call.name == "weather" else {"maxProperties": 0}
        )
    with pytest.raises(ValueError, match="leaves the output free"):
        ConstraintLogitsProcessor(Tools(tools.tools, "none"), tokenizer)


def test_forced_tokens_exposed_per_row(adversary):
    """The processor tells, per row, the tokens the constraint forces next (canonical tokenization)."""
    tokenizer = adversary.tokenizer
    schema = {
        "type": "object",
        "properties": {"temperature": {"type": "number"}},
        "required": ["temperature"],
    }
    processor = JSONSchemaLogitsProcessor(schema, tokenizer)
    prompt = tokenizer("JSON: ", return_tensors="pt").input_ids
    processor(prompt, torch.zeros(1, adversary.vocab_size))
    generated = torch.cat([prompt, torch.tensor([tokenizer.encode('{"', add_special_tokens=False)])], dim=1)
    processor(generated, torch.zeros(1, adversary.vocab_size))
    forced = processor.forced_tokens(0, tokenizer)
    assert forced and forced == tokenizer.encode('temperature":', add_special_tokens=False)[:-1]
