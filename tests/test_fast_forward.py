"""Fast-forward: forced tokens are the tokenizer's own tokenization of the forced text, they save forward
passes, and greedy output is the same text with and without them."""

from __future__ import annotations

import json

import jsonschema
import pytest

from constrained.engine import Engine, GenerationRequest, collect
from constrained.fast_forward import forced_tokens
from constrained.grammar import GrammarCompiler
from constrained.sampling import SamplingParams
from constrained.tokenizer_info import TokenizerInfo

SCHEMA = {
    "type": "object",
    "properties": {
        "customer_name": {"type": "string", "maxLength": 8},
        "shipping_address": {"enum": ["home", "office"]},
        "priority_level": {"type": "integer", "minimum": 0, "maximum": 9},
        "gift_wrapping_requested": {"type": "boolean"},
    },
    "required": ["customer_name", "shipping_address", "priority_level", "gift_wrapping_requested"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def compiled(adversary):
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(adversary.tokenizer, adversary.vocab_size))
    return compiler.compile_json_schema(SCHEMA)


def test_forced_tokens_are_the_canonical_tokenization(adversary, compiled):
    tokenizer = adversary.tokenizer

    def at(text: str):
        matcher = compiled.matcher()
        assert matcher.accept_tokens(tokenizer.encode(text, add_special_tokens=False))
        return matcher

    assert at("{").forced_bytes() == b""  # a space may come, or the quote: a choice
    matcher = at('{"')
    assert matcher.forced_bytes() == b'customer_name":'  # a space may follow the colon
    state = matcher.state
    forced = forced_tokens(matcher, tokenizer, limit=32)
    assert forced and forced == tokenizer.encode('customer_name":', add_special_tokens=False)[:-1]
    assert forced_tokens(matcher, tokenizer, limit=1) == forced[:1]
    assert matcher.state == state  # left unchanged
    assert at('{"customer_name":"Al","').forced_bytes() == b'shipping_address":'
    assert at('{"customer_name":"Al","shipping_address":"').forced_bytes() == b""  # home or office
    assert (
        at('{"customer_name":"Al","shipping_address":"h').forced_bytes() == b'ome",'
    )  # a space may follow the comma


class _CountingRuntime:
    def __init__(self, runtime) -> None:
        self._runtime, self.steps = runtime, 0

    def __getattr__(self, name):
        return getattr(self._runtime, name)

    def decode(self, tokens):
        self.steps += 1
        return self._runtime.decode(tokens)


def _run(loaded, requests, fast_forward: bool) -> tuple[list[list[str]], int, int]:
    """Texts, forward passes after the prefills, and completion tokens."""
    runtime = _CountingRuntime(loaded.runtime(8))
    engine = Engine(runtime, loaded.tokenizer, max_batch_size=8, fast_forward=fast_forward)
    try:
        out = collect(engine, requests)
    finally:
        engine.shutdown()
    assert not out.failures
    return out.texts, runtime.steps, out.completion_tokens


def _requests(tokenizer, grammar, prompts: list[str], max_tokens: int = 80) -> list[GenerationRequest]:
    def ids(prompt: str) -> list[int]:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    greedy = SamplingParams(temperature=0.0)
    return [GenerationRequest(ids(p), max_tokens, greedy, grammar=grammar) for p in prompts]


def test_fast_forward_saves_forward_passes_outputs_valid(adversary_on, compiled):
    """The random-weight adversary (on both runtimes): valid outputs, fewer passes, tokens all counted."""
    prompts = ["JSON", "an order as JSON"]
    with_ff, steps_ff, tokens_ff = _run(
        adversary_on, _requests(adversary_on.tokenizer, compiled, prompts), True
    )
    without, steps, _ = _run(adversary_on, _requests(adversary_on.tokenizer, compiled, prompts), False)
    for text in [t for choices in with_ff + without for t in choices]:
        jsonschema.validate(json.loads(text), SCHEMA)
    assert steps_ff < steps * 0.8  # the property names are forced
    assert tokens_ff > steps_ff  # forced tokens are counted as completion tokens


def test_fast_forward_same_greedy_text_on_the_embedded_model(embedded):
    """A trained model writes the forced text with the tokenizer's own tokens, so skipping them changes
    nothing: greedy output is the same text with and without fast-forward."""
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(embedded.tokenizer, embedded.vocab_size))
    grammar = compiler.compile_json_schema(SCHEMA)
    for prompt in ["Make up a customer order as JSON.", "Give me an example order in JSON."]:
        # one request at a time: a batch's composition may change the float sums, hence near-tied choices
        with_ff, steps_ff, _ = _run(embedded, _requests(embedded.tokenizer, grammar, [prompt], 60), True)
        without, steps, _ = _run(embedded, _requests(embedded.tokenizer, grammar, [prompt], 60), False)
        assert with_ff == without
        assert steps_ff < steps


def test_logprobs_requests_are_not_fast_forwarded(adversary, compiled):
    prompt = adversary.tokenizer.encode("<|im_start|>user\nJSON<|im_end|>\n<|im_start|>assistant\n")
    request = GenerationRequest(prompt, 60, SamplingParams(temperature=0.0), grammar=compiled, logprobs=True)
    _, steps, tokens = _run(adversary, [request], fast_forward=True)
    assert steps == tokens - 1  # one forward pass per token after the prefill's
