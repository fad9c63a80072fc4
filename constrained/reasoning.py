"""Reasoning first: the thinking block a reasoning model writes before its answer.

Contract:
- `Reasoning(open_tag, close_tag, budget)` describes a request's thinking: free text up to `close_tag`, at
  most `budget` tokens (the engine then appends the closing tag itself); the constraint applies after the
  tag (`grammars.reasoning.think_then` builds that grammar).
- `split_reasoning(text, reasoning)` cuts a finished output into (reasoning, answer) — all reasoning when
  the closing tag never came; `ReasoningSplitter` does the same on a stream of text pieces, holding back only
  what could be the start of a tag.
- `reasoning_grammar(compiler, answer, reasoning)` compiles the think-then-answer grammar of a constraint.
"""

from __future__ import annotations

from dataclasses import dataclass

from constrained.grammar import Grammar, GrammarCompiler
from grammars.reasoning import DEFAULT_CLOSE_TAG, DEFAULT_OPEN_TAG, think_then

EFFORT_BUDGETS = {"minimal": 64, "low": 256, "medium": 1024, "high": 4096}  # thinking tokens per effort


@dataclass(frozen=True)
class Reasoning:
    open_tag: str = DEFAULT_OPEN_TAG
    close_tag: str = DEFAULT_CLOSE_TAG
    budget: int = EFFORT_BUDGETS["medium"]


def split_reasoning(text: str, reasoning: Reasoning) -> tuple[str, str]:
    """(thinking, answer) of a finished output; all thinking when the closing tag never came (as vLLM)."""
    head, _tag, tail = text.partition(reasoning.close_tag)
    return head.removeprefix(reasoning.open_tag).lstrip("\n"), tail.lstrip("\n ")


class ReasoningSplitter:
    """Streams (kind, text) pieces — kind "reasoning", then "content" — from the output's text pieces; their
    concatenations per kind equal `split_reasoning` of the whole text."""

    def __init__(self, reasoning: Reasoning) -> None:
        self._reasoning = reasoning
        self._held = ""  # text not yet classified: a possible tag prefix
        self._answering = False
        self._leading = True  # nothing of the current part emitted yet (its leading tag/space is dropped)

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._held += text
        pieces: list[tuple[str, str]] = []
        if not self._answering:
            opening, closing = self._reasoning.open_tag, self._reasoning.close_tag
            head, tag, tail = self._held.partition(closing)
            if not tag:
                keep = _partial_suffix(self._held, closing)
                if self._leading and opening.startswith(self._held):
                    keep = len(self._held)  # may still become the opening tag
                ready, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
                return self._emit("reasoning", ready)
            pieces = self._emit("reasoning", head)
            self._answering, self._leading, self._held = True, True, tail
        ready, self._held = self._held, ""
        return pieces + self._emit("content", ready)

    def finish(self) -> list[tuple[str, str]]:
        held, self._held = self._held, ""
        return self._emit("content" if self._answering else "reasoning", held)

    def _emit(self, kind: str, text: str) -> list[tuple[str, str]]:
        if self._leading:
            if kind == "reasoning":
                text = text.removeprefix(self._reasoning.open_tag).lstrip("\n")
            else:
                text = text.lstrip("\n ")
            self._leading = not text
        return [(kind, text)] if text else []


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def reasoning_grammar(compiler: GrammarCompiler, answer: Grammar, reasoning: Reasoning) -> Grammar:
    """`answer`'s constraint preceded by a free thinking block closed by the reasoning's tag."""
    return compiler.compile_grammar(think_then(answer.source, reasoning.open_tag, reasoning.close_tag))
