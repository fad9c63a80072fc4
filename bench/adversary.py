"""The random-weight adversary at scale: many generations under corpus schemas, every output must validate.

    python bench/adversary.py [--generations 10000] [--data ../shared/corpora/maskbench] [--per-file 6]

A tiny Llama with random weights over the embedded model's real vocabulary (it picks strange tokens: the
best adversary for a constraint) samples, at temperature 1 with a distinct seed per generation, under the
first `--per-file` schemas of every corpus file that compile (built-in schemas without a corpus), `n`
choices per request, all through one engine (continuous batching, budget-aware closing). Every output is
validated with `jsonschema`. Last line:
`adversary: generations=G schemas=S valid=V invalid=I failed=F` (I and F must be 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jsonschema  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from constrained.engine import Engine, GenerationRequest, collect  # noqa: E402
from constrained.grammar import GrammarCompiler  # noqa: E402
from constrained.models import LoadedModel, load_model  # noqa: E402
from constrained.sampling import SamplingParams  # noqa: E402
from constrained.tokenizer_info import TokenizerInfo  # noqa: E402
from grammars import SchemaError  # noqa: E402

BUILT_IN = [
    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}}, "required": ["id"]},
    {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 4},
    {"enum": ["red", "green", 3, None, {"k": [1, 2]}]},
    {"type": "string", "format": "date"},
    {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]{2,4}$"}]},
    {
        "$defs": {
            "n": {"type": "object", "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}
        },
        "$ref": "#/$defs/n",
    },
    {},
]


def random_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A tiny Llama with random weights over the real vocabulary: it picks strange tokens."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # spread the logits so sampling is far from uniform
        model.lm_head.weight.mul_(8.0)
    return model.eval()


def corpus(folder: Path | None, per_file: int) -> list[dict]:
    if folder is None or not folder.is_dir():
        return BUILT_IN
    schemas = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open() as lines:
            schemas += [json.loads(line)["schema"] for _, line in zip(range(per_file), lines, strict=False)]
    return schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generations", type=int, default=10_000)
    parser.add_argument("--data", type=Path, default=_ROOT.parent / "shared" / "corpora" / "maskbench")
    parser.add_argument("--per-file", type=int, default=6)
    parser.add_argument("--n", type=int, default=10, help="choices per request (they share a prefill)")
    parser.add_argument("--max-tokens", type=int, default=48, help="at least the schema's shortest output")
    args = parser.parse_args(argv)

    tokenizer = load_model("embedded", runtime="torch").tokenizer
    adversary = LoadedModel(random_model(len(tokenizer)), tokenizer, "random-smollm2")
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer, adversary.vocab_size))
    usable = []
    for schema in corpus(args.data, args.per_file):
        try:
            usable.append(
                (
                    schema,
                    compiler.compile_json_schema(schema),
                    jsonschema.validators.validator_for(schema)(schema),
                )
            )
        except (SchemaError, ValueError):
            continue
    prompt = tokenizer.encode("<|im_start|>user\nJSON<|im_end|>\n<|im_start|>assistant\n")
    requests, owners = [], []
    for number in range(0, args.generations, args.n):
        schema, grammar, validator = usable[(number // args.n) % len(usable)]
        budget = max(grammar.min_tokens(), args.max_tokens)
        params = SamplingParams(temperature=1.0, seed=number)
        n = min(args.n, args.generations - number)
        requests.append(GenerationRequest(prompt, budget, params, n=n, grammar=grammar))
        owners.append(validator)
    engine = Engine(adversary.runtime(64), tokenizer, max_batch_size=64)
    start = time.perf_counter()
    try:
        outputs = collect(engine, requests, timeout=24 * 3600)
    finally:
        engine.shutdown()
    seconds = time.perf_counter() - start
    valid = invalid = 0
    for validator, texts in zip(owners, outputs.texts, strict=True):
        for text in texts:
            try:
                validator.validate(json.loads(text))
                valid += 1
            except (ValueError, jsonschema.ValidationError):
                invalid += 1
    print(f"{len(requests)} requests, {outputs.completion_tokens} tokens in {seconds:.0f} s")
    print(
        f"adversary: generations={valid + invalid} schemas={len(usable)} valid={valid} invalid={invalid} "
        f"failed={len(outputs.failures)}"
    )
    return 0 if invalid == 0 and not outputs.failures else 1


if __name__ == "__main__":
    sys.exit(main())
