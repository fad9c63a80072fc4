"""The random-weight adversary generating under many schemas at once: every output validates.

Schemas come from `../shared/corpora/maskbench` when present (the first that compile, across subsets) and
from a built-in set otherwise. All requests run concurrently through one engine (continuous batching), with
budget-aware closing, so even outputs cut by `max_tokens` must parse and validate.
"""

from __future__ import annotations

import json
import threading

import jsonschema

from constrained.engine import (
    ChoiceDelta,
    ChoiceFinished,
    Engine,
    GenerationRequest,
    RequestFailed,
    RequestFinished,
)
from constrained.grammar import GrammarCompiler
from constrained.sampling import SamplingParams
from constrained.tokenizer_info import TokenizerInfo
from grammars import SchemaError
from tests.conftest import CORPORA

BUILT_IN = [
    {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999}},
        "required": ["id"],
    },
    {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 4},
    {"enum": ["red", "green", 3, None, {"k": [1, 2]}]},
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "number"}},
        "required": ["ok"],
    },
    {"type": "string", "format": "date"},
    {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]{2,4}$"}]},
    {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    },
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"const": "x"}}},
        "additionalProperties": False,
    },
]


# Recursive schemas are always in the mix: they exercise the automaton's stack and closing through it.
RECURSIVE = [
    {},
    {"type": "object"},
    {
        "$defs": {
            "tree": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 6},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/tree"}, "minItems": 1},
                },
                "required": ["name"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/tree",
    },
    {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"$ref": "#"}]}},
]


def corpus_schemas(limit: int) -> list[dict]:
    return RECURSIVE + _sampled(limit)


def _sampled(limit: int) -> list[dict]:
    folder = CORPORA / "maskbench"
    if not folder.is_dir():
        return BUILT_IN
    picked = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open() as lines:
            for _, line in zip(range(6), lines, strict=False):
                picked.append(json.loads(line)["schema"])
    return picked[:limit]


def test_adversary_outputs_validate(adversary_on):
    adversary = adversary_on
    info = TokenizerInfo.from_huggingface(adversary.tokenizer, adversary.vocab_size)
    compiler = GrammarCompiler(info)
    engine = Engine(adversary.runtime(64), adversary.tokenizer, max_batch_size=64)
    prompt = adversary.tokenizer.encode("<|im_start|>user\nJSON<|im_end|>\n<|im_start|>assistant\n")
    done = threading.Event()
    results: dict[int, dict] = {}
    lock = threading.Lock()
    compiled = 0
    try:
        for number, schema in enumerate(corpus_schemas(44)):
            try:
                grammar = compiler.compile_json_schema(schema)
            except (SchemaError, ValueError):
                continue
            budget = max(grammar.min_tokens(), 48)
            compiled += 1
            results[number] = {"schema": schema, "text": "", "reason": None, "done": False}

            def emit(event, number=number):
                with lock:
                    entry = results[number]
                    if isinstance(event, ChoiceDelta):
                        entry["text"] += event.text
                    elif isinstance(event, ChoiceFinished):
                        entry["reason"] = event.finish_reason
                    elif isinstance(event, RequestFailed):
                        entry["reason"] = "failed: " + event.message
                    if isinstance(event, RequestFinished | RequestFailed):
                        entry["done"] = True
                        if all(e["done"] for e in results.values()):
                            done.set()

            request = GenerationRequest(
                prompt, budget, SamplingParams(temperature=1.0, seed=number), grammar=grammar
            )
            engine.submit(request, emit)
        assert done.wait(600), "generation did not finish"
    finally:
        engine.shutdown()
    assert compiled >= (30 if (CORPORA / "maskbench").is_dir() else len(BUILT_IN) - 1)
    reasons = [entry["reason"] for entry in results.values()]
    stops, lengths = reasons.count("stop"), reasons.count("length")
    print(f"{compiled} schemas compiled; finish reasons: stop={stops} length={lengths}")
    for entry in results.values():
        assert entry["reason"] in ("stop", "length"), entry
        jsonschema.validate(json.loads(entry["text"]), entry["schema"])
