"""The decode loop: batching (prefill groups, joining a running batch) never changes a greedy output."""

from __future__ import annotations

import threading

from constrained.engine import ChoiceDelta, Engine, GenerationRequest, RequestFinished
from constrained.sampling import SamplingParams


def run(engine: Engine, prompts: list[list[int]], max_tokens: int = 10) -> dict[int, str]:
    texts = {i: "" for i in range(len(prompts))}
    done = threading.Event()
    left = [len(prompts)]

    def emitter(i: int):
        def emit(event):
            if isinstance(event, ChoiceDelta):
                texts[i] += event.text
            elif isinstance(event, RequestFinished):
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        return emit

    params = SamplingParams(temperature=0, logit_bias={2: -100})
    for i, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(prompt, max_tokens, params), emitter(i))
    assert done.wait(120)
    return texts


def test_batched_greedy_equals_alone(adversary):
    tok = adversary.tokenizer
    prompts = [
        tok.encode(text) for text in ("Hi", "a much longer prompt than the first one, with more", "2+2?")
    ]
    engine = Engine(adversary.runtime(), tok)
    try:
        alone = {}
        for i, prompt in enumerate(prompts):
            alone[i] = run(engine, [prompt])[0]
        together = run(engine, prompts)
        staggered = run(engine, prompts[::-1], max_tokens=10)
    finally:
        engine.shutdown()
    assert together == alone
    assert [staggered[2], staggered[1], staggered[0]] == [alone[0], alone[1], alone[2]]
    assert len(set(alone.values())) == 3


def test_shutdown_finishes_in_flight_and_refuses_new(adversary):
    from constrained.engine import ChoiceFinished, RequestFailed

    engine = Engine(adversary.runtime(), adversary.tokenizer)
    events: list = []
    started = threading.Event()

    def emit(event):
        events.append(event)
        started.set()

    engine.submit(
        GenerationRequest(adversary.tokenizer.encode("hi"), 40, SamplingParams(temperature=0)), emit
    )
    assert started.wait(60)
    engine.shutdown(timeout=60)
    assert any(isinstance(e, ChoiceFinished) for e in events)  # the request in flight ran to its end
    assert isinstance(events[-1], RequestFinished)
    late: list = []
    engine.submit(GenerationRequest([1, 2, 3], 5), late.append)
    assert len(late) == 1 and isinstance(late[0], RequestFailed)


def test_constraint_past_its_automaton_budget_fails_as_a_limit(adversary):
    """A constraint whose automaton outgrows its state budget while generating fails that request as a limit
    of the request (`RequestFailed.limit`: a 400 `constraint_too_large`), not as a server error (500)."""
    from constrained.engine import RequestFailed
    from constrained.grammar import GrammarCompiler
    from constrained.tokenizer_info import TokenizerInfo
    from server.errors import generation_failed

    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(adversary.tokenizer), max_states=4)
    grammar = compiler.compile_regex("[a-z]{0,40}")  # a state per length: past 4 states within a few tokens
    engine = Engine(adversary.runtime(), adversary.tokenizer)
    events: list = []
    done = threading.Event()

    def emit(event):
        events.append(event)
        if isinstance(event, RequestFinished | RequestFailed):
            done.set()

    try:
        prompt = adversary.tokenizer.encode("hi")
        engine.submit(GenerationRequest(prompt, 30, SamplingParams(temperature=0), grammar=grammar), emit)
        assert done.wait(120)
    finally:
        engine.shutdown()
    failed = events[-1]
    assert isinstance(failed, RequestFailed) and failed.limit and "exceeds 4 states" in failed.message
    error = generation_failed(failed.message, failed.limit)
    assert error.status == 400 and error.body()["error"]["code"] == "constraint_too_large"
    assert generation_failed("boom", False).status == 500
