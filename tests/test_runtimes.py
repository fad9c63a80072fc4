"""Model runtimes: torch and llama.cpp keep the same batch of rows, and the same weights give the same
logits and the same constrained outputs on both."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from constrained.engine import Engine, GenerationRequest, collect
from constrained.grammar import GrammarCompiler
from constrained.sampling import SamplingParams
from constrained.tokenizer_info import TokenizerInfo

pytestmark = pytest.mark.llamacpp

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "tags": {"type": "array", "items": {"enum": [1, 2]}},
    },
    "required": ["name", "tags"],
    "additionalProperties": False,
}


def test_llamacpp_vocabulary_matches_the_tokenizer(adversary_gguf):
    """Token ids are shared: llama.cpp's vocabulary renders every id as the Hugging Face tokenizer does."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(adversary_gguf.model.handle)
    tokenizer = adversary_gguf.tokenizer
    assert adversary_gguf.vocab_size == len(tokenizer)
    text = 'Hello, wörld! {"a": [1, 2.5e-3, null]} \n\t 日本語 🙂'
    buffer = (llama_cpp.llama_token * 256)()
    encoded = text.encode()
    count = llama_cpp.llama_tokenize(vocab, encoded, len(encoded), buffer, 256, False, False)
    assert list(buffer[:count]) == tokenizer.encode(text, add_special_tokens=False)


def test_same_weights_same_logits_through_prefill_copies_decode_keep(adversary, adversary_gguf):
    tokenizer = adversary.tokenizer
    prompts = [tokenizer.encode("a longer prompt than the other one"), tokenizer.encode("short")]
    runtimes = [adversary.runtime(8), adversary_gguf.runtime(8)]
    logits = [runtime.prefill(prompts, [2, 1]) for runtime in runtimes]
    assert [tuple(x.shape) for x in logits] == [(3, adversary.vocab_size)] * 2
    for _ in range(6):
        assert torch.allclose(logits[0], logits[1], atol=1e-2)
        tokens = logits[0].argmax(dim=-1).tolist()
        logits = [runtime.decode([[t] for t in tokens]) for runtime in runtimes]
    more = [runtime.prefill([tokenizer.encode("joins later")], [1]) for runtime in runtimes]
    assert torch.allclose(more[0], more[1], atol=1e-2)
    for runtime in runtimes:
        runtime.keep([1, 3])
        assert runtime.rows == 2
    logits = [runtime.decode([[17, 18, 19], [42]]) for runtime in runtimes]
    assert torch.allclose(logits[0], logits[1], atol=1e-2)
    for runtime in runtimes:
        runtime.reset()
        assert runtime.rows == 0


def _generate(loaded, requests: list[GenerationRequest]) -> list[list[str]]:
    engine = Engine(loaded.runtime(16), loaded.tokenizer, max_batch_size=16)
    try:
        out = collect(engine, requests)
    finally:
        engine.shutdown()
    assert not out.failures
    return out.texts


def test_constrained_outputs_identical_on_both_runtimes(adversary, adversary_gguf):
    """Greedy and seeded sampling under a schema, batched, n > 1: the same texts on both, all valid."""
    grammar = GrammarCompiler(TokenizerInfo.from_huggingface(adversary.tokenizer, adversary.vocab_size))
    compiled = grammar.compile_json_schema(SCHEMA)
    prompt = adversary.tokenizer.encode("<|im_start|>user\nJSON<|im_end|>\n<|im_start|>assistant\n")

    def requests():
        return [
            GenerationRequest(prompt, 40, SamplingParams(temperature=0.0), grammar=compiled),
            GenerationRequest(
                prompt[:-2], 40, SamplingParams(temperature=1.0, seed=7), n=3, grammar=compiled
            ),
        ]

    on_torch = _generate(adversary, requests())
    on_llamacpp = _generate(adversary_gguf, requests())
    assert on_llamacpp == on_torch
    for text in [t for choices in on_llamacpp for t in choices]:
        jsonschema.validate(json.loads(text), SCHEMA)


def test_llamacpp_reuses_remembered_prompt_prefixes_exactly(adversary, adversary_gguf):
    """A prompt sharing a prefix with an earlier one decodes only the rest, with the same logits."""
    tokenizer = adversary.tokenizer
    system = tokenizer.encode("<|im_start|>system\nYou are a careful assistant.<|im_end|>\n")
    prompts = [system + tokenizer.encode(text) for text in ("first question", "second question?", "x")]
    fast = adversary_gguf.runtime(4)
    decoded: list[int] = []
    original = fast._run

    def counting(entries):
        decoded.append(len(entries))
        return original(entries)

    fast._run = counting
    for prompt in prompts:
        expected = adversary.runtime(4).prefill([prompt], [1])
        got = fast.prefill([prompt], [1])
        assert torch.allclose(got, expected, atol=1e-2)
        assert torch.allclose(fast.decode([[5]]), _torch_next(adversary, prompt, 5), atol=1e-2)
        fast.reset()
    assert decoded[0] == len(prompts[0])  # nothing remembered yet
    assert decoded[2] == len(prompts[1]) - len(system)  # the system prompt's cells are shared


def _torch_next(loaded, prompt: list[int], token: int) -> torch.Tensor:
    runtime = loaded.runtime(1)
    runtime.prefill([prompt], [1])
    return runtime.decode([[token]])
