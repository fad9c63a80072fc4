"""Think, then answer: free thinking up to the closing tag (bounded), then the constraint; the thinking is
returned apart from the answer."""

from __future__ import annotations

import json
import random
import re

import jsonschema
import pytest

from constrained.engine import Engine, GenerationRequest, collect
from constrained.grammar import GrammarCompiler
from constrained.reasoning import Reasoning, ReasoningSplitter, reasoning_grammar, split_reasoning
from constrained.sampling import SamplingParams
from constrained.tokenizer_info import TokenizerInfo
from grammars.reasoning import text_without

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "unit": {"enum": ["m", "s"]}},
    "required": ["answer", "unit"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("tag", ["</think>", "[/THINK]", "◁/think▷"])
def test_text_without_tag_is_exact(tag):
    pattern = re.compile(text_without(tag), re.DOTALL)
    alphabet = [*tag, tag, tag[:-1], "x", "\n", "é"]
    rng = random.Random(tag)
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        assert (pattern.fullmatch(text) is not None) == (tag not in text), text


def test_tags_with_a_repeated_character_are_refused():
    with pytest.raises(ValueError, match="none repeated"):
        text_without("<<END>>")


@pytest.mark.parametrize(
    "text",
    [
        '<think>\nhmm, 2+2</think>\n\n{"answer": 4}',
        '</think>{"a": "</think>"}',
        "still thinking, cut by length",
        "<think>a</thi</think> x",
        "<thi",
    ],
)
def test_streamed_split_equals_the_finished_split(text):
    reasoning = Reasoning()
    expected = split_reasoning(text, reasoning)
    rng = random.Random(text)
    for _ in range(100):
        cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
        splitter = ReasoningSplitter(reasoning)
        pieces = []
        for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
            pieces += splitter.feed(text[a:b])
        pieces += splitter.finish()
        kinds = [kind for kind, _ in pieces]
        assert kinds == sorted(kinds, key=["reasoning", "content"].index)  # thinking first, then the answer
        got = tuple("".join(t for k, t in pieces if k == kind) for kind in ("reasoning", "content"))
        assert got == expected


def test_split_reasoning():
    assert split_reasoning('<think>\nplan</think>\n\n{"a":1}', Reasoning()) == ("plan", '{"a":1}')
    assert split_reasoning("no tag", Reasoning()) == ("no tag", "")


def _generate(loaded, request: GenerationRequest) -> str:
    engine = Engine(loaded.runtime(4), loaded.tokenizer, max_batch_size=4)
    try:
        out = collect(engine, [request])
    finally:
        engine.shutdown()
    assert not out.failures
    return out.texts[0][0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adversary_thinks_then_answers_valid_json_within_its_budget(adversary, seed):
    tokenizer = adversary.tokenizer
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer, adversary.vocab_size))
    reasoning = Reasoning(budget=40)
    grammar = reasoning_grammar(compiler, compiler.compile_json_schema(SCHEMA), reasoning)
    prompt = tokenizer.encode("<|im_start|>user\nHow far?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    request = GenerationRequest(
        prompt, 120, SamplingParams(temperature=1.0, seed=seed), grammar=grammar, reasoning=reasoning
    )
    text = _generate(adversary, request)
    thinking, answer = split_reasoning(text, reasoning)
    assert reasoning.close_tag in text
    jsonschema.validate(json.loads(answer), SCHEMA)
    head = text.partition(reasoning.close_tag)[0]
    assert len(tokenizer.encode(head, add_special_tokens=False)) <= reasoning.budget + 8  # retokenized


@pytest.fixture(scope="module")
def reasoning_client(adversary):
    import openai

    from server.app import create_app
    from server.serving import build_service
    from tests.conftest import LiveServer, free_port

    service = build_service(adversary, max_batch_size=8, reasoning=Reasoning())
    with LiveServer(create_app(service), free_port()) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    service.engine.shutdown()


def test_server_returns_reasoning_apart_and_a_valid_answer(reasoning_client):
    from tests.conftest import TEST_MODEL_ID

    kwargs = dict(
        model=TEST_MODEL_ID,
        messages=[{"role": "user", "content": "How far, in JSON?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "d", "schema": SCHEMA}},
        max_tokens=80,
        seed=5,
        temperature=1.0,
        reasoning_effort="minimal",
    )
    message = reasoning_client.chat.completions.create(**kwargs).choices[0].message
    thinking = message.model_extra["reasoning_content"]
    assert isinstance(thinking, str) and "</think>" not in thinking
    jsonschema.validate(json.loads(message.content), SCHEMA)
    streamed = {"reasoning_content": "", "content": ""}
    order = []
    for chunk in reasoning_client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            delta = choice.delta.model_dump(exclude_none=True)
            for key in streamed:
                if delta.get(key):
                    streamed[key] += delta[key]
                    order.append(key)
    assert order == sorted(order, key=["reasoning_content", "content"].index)
    assert streamed == {"reasoning_content": thinking, "content": message.content}  # same seed, same text
