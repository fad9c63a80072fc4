"""The cyclic collector is paused during compiles and first masks, and restored exactly after."""

from __future__ import annotations

import gc
import threading

from constrained.gc_pause import gc_paused


def test_paused_inside_restored_after_nested_and_across_threads() -> None:
    assert gc.isenabled()
    inner_started, release = threading.Event(), threading.Event()

    def other() -> None:
        with gc_paused():
            inner_started.set()
            release.wait(10)

    with gc_paused():
        assert not gc.isenabled()
        worker = threading.Thread(target=other)
        worker.start()
        assert inner_started.wait(10)
    assert not gc.isenabled()  # the other thread's block still runs
    release.set()
    worker.join()
    assert gc.isenabled()


def test_a_host_that_disabled_the_collector_keeps_it_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_compiles_and_first_masks_run_with_the_collector_paused(monkeypatch, tokenizer) -> None:
    from constrained.grammar import GrammarCompiler
    from constrained.token_index import automaton
    from constrained.tokenizer_info import TokenizerInfo

    seen: list[bool] = []
    expand = automaton.LazyDFA._expand

    def watched(self, state: int) -> list[int]:
        seen.append(gc.isenabled())
        return expand(self, state)

    monkeypatch.setattr(automaton.LazyDFA, "_expand", watched)
    grammar = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer)).compile_json_schema(
        {"type": "object", "properties": {"a": {"type": "integer"}}}
    )
    grammar.state_mask(grammar.initial_state)
    assert seen and not any(seen) and gc.isenabled()
