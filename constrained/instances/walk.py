"""Valid instances: random walks over a schema's compiled byte automaton.

Contract:
- `Walker(dfa)` walks the same lazily built `LazyDFA` the token index uses, so every walk is in the
  grammar's language (valid UTF-8, JSON). `accepts(text)` is membership, `distance(state)` the length of
  the shortest completion (from the grammar, cached per state).
- Walk: at each state the live bytes are grouped by next state; a group is drawn (ASCII groups weigh 1, a
  lone backslash `ESCAPE_WEIGHT`, groups of non-ASCII lead bytes `UNICODE_WEIGHT` each), then a byte inside
  it, so "a digit" and "the closing quote" are equally likely and optional members, enum values and lengths
  all get exercised. Once the length target is passed the walk follows a random shortest completion (BFS
  levels toward an accepting state). At an accepting state the walk stops with probability
  `STOP_PROBABILITY` (always when no byte is live).
- `ValidSampler(dfa, validator)`: `draw(rng)` draws a length target (log-uniform) and a self-loop bias
  (longer strings/digit runs) per instance, parses the walk and records `jsonschema`'s verdict in
  `Instance.valid` (False would be a compiler soundness bug); texts with duplicate object keys or
  non-finite numbers are drawn again (`rejected_draws`), at most `MAX_ATTEMPTS` draws, then
  `GenerationError`. `valid(n, seed=)` is `n` draws from one seeded generator.
"""

from __future__ import annotations

import json
import math
import random

from jsonschema.protocols import Validator

from constrained.instances.common import GenerationError, Instance, all_finite, compact_json
from constrained.token_index.automaton import DEAD, LazyDFA

UNICODE_WEIGHT = 0.02
ESCAPE_WEIGHT = 0.3  # a group of only `\\` (string escapes)
STOP_PROBABILITY = 0.5
MAX_ATTEMPTS = 20  # draws per requested instance before giving up


class Walker:
    """Random walks over a LazyDFA; per-state byte groups and shortest completions are cached."""

    def __init__(self, dfa: LazyDFA) -> None:
        self.dfa = dfa
        self._groups: dict[int, tuple[list[int], list[bytes], list[float]]] = {}
        self._dist: dict[int, int] = {}

    def accepts(self, text: str) -> bool:
        """Whether the automaton accepts `text` (as UTF-8)."""
        state = self.dfa.initial
        for byte in text.encode():
            if state == DEAD:
                return False
            state = self.dfa.row(state)[byte]
        return self.dfa.is_final(state)

    def groups(self, state: int) -> tuple[list[int], list[bytes], list[float]]:
        """(next states, the bytes leading to each, each group's weight) of the live bytes at `state`."""
        got = self._groups.get(state)
        if got is None:
            by_next: dict[int, bytearray] = {}
            for byte, nxt in enumerate(self.dfa.row(state)):
                if nxt != DEAD:
                    by_next.setdefault(nxt, bytearray()).append(byte)
            nexts = list(by_next)
            data = [bytes(by_next[s]) for s in nexts]
            weights = [
                (ESCAPE_WEIGHT if b == b"\\" else 1.0) if b[0] < 0x80 else UNICODE_WEIGHT for b in data
            ]
            got = self._groups[state] = (nexts, data, weights)
        return got

    def distance(self, state: int) -> int:
        """Bytes of the shortest completion of `state` (from the grammar; cached)."""
        dist = self._dist.get(state)
        if dist is None:
            dist = self._dist[state] = len(self.dfa.completion(state))
        return dist

    def close(self, state: int, rng: random.Random, out: bytearray) -> int:
        """Append a random shortest completion of `state`; returns the accepting state reached."""
        while (dist := self.distance(state)) > 0:
            nexts, data, _ = self.groups(state)
            k = rng.choice([i for i, nxt in enumerate(nexts) if self.distance(nxt) == dist - 1])
            out.append(rng.choice(data[k]))
            state = nexts[k]
        return state

    def walk(self, rng: random.Random, target: int, loop_bias: float) -> bytes:
        """One accepted byte string: weighted steps until about `target` bytes, then a shortest completion."""
        state = self.dfa.initial
        if state == DEAD:
            raise GenerationError("the schema admits no instance")
        out = bytearray()
        while True:
            nexts, data, weights = self.groups(state)
            if self.dfa.is_final(state) and (not nexts or rng.random() < STOP_PROBABILITY):
                return bytes(out)
            if len(out) >= target:
                self.close(state, rng, out)
                return bytes(out)
            if loop_bias and state in nexts and rng.random() < loop_bias:
                k = nexts.index(state)
            else:
                k = rng.choices(range(len(nexts)), weights)[0]
            out.append(rng.choice(data[k]))
            state = nexts[k]


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate("duplicate key")
    return out


class ValidSampler:
    """Parsed, validated instances from a `Walker`'s walks."""

    def __init__(self, dfa: LazyDFA, validator: Validator) -> None:
        self.walker = Walker(dfa)
        self.validator = validator
        self.rejected_draws = 0  # duplicate keys / non-finite numbers drawn again

    def shortest(self) -> int:
        """Bytes of the shortest instance."""
        return self.walker.distance(self.walker.dfa.initial)

    def draw(self, rng: random.Random) -> Instance:
        for _ in range(MAX_ATTEMPTS):
            target = self.shortest() * rng.choice((1, 1, 2, 3)) + int(math.exp(rng.uniform(0, math.log(800))))
            loop_bias = rng.choice((0.0, 0.0, 0.5, 0.85))
            raw = self.walker.walk(rng, target, loop_bias).decode("utf-8")
            try:
                value = json.loads(raw, object_pairs_hook=_no_duplicates)
            except (_Duplicate, ValueError):
                self.rejected_draws += 1
                continue
            if not all_finite(value):
                self.rejected_draws += 1
                continue
            return Instance(value, compact_json(value), raw, self.validator.is_valid(value))
        raise GenerationError(f"no usable instance in {MAX_ATTEMPTS} draws")

    def valid(self, n: int, *, seed: int = 0) -> list[Instance]:
        rng = random.Random(seed)
        return [self.draw(rng) for _ in range(n)]
