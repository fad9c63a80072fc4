"""JSON nesting depth on raw bytes (`server.nesting`): exact on valid JSON, linear on hostile text."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from server.nesting import Structure

TRICKY = ['a"b\\', '\\"[{', "x]}", "\\\\", '"', "é]", "", "[", "{}"]


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def random_json(rng: random.Random, level: int = 0) -> Any:
    roll = rng.random()
    if level > 7 or roll < 0.3:
        return rng.choice([1, None, 2.5, True, *TRICKY])
    if roll < 0.65:
        return [random_json(rng, level + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(TRICKY + ["k"]): random_json(rng, level + 1) for _ in range(rng.randint(0, 3))}


def test_depth_matches_the_parsed_value() -> None:
    rng = random.Random(0)
    for _ in range(2_000):
        value = random_json(rng)
        for text in (json.dumps(value), json.dumps(value, indent=1, ensure_ascii=False)):
            assert Structure.of(text.encode()).max_depth == depth(value), text


@pytest.mark.parametrize(
    ("value", "limit", "path"),
    [
        ({"a": [1, {"b/~": {"c": [[2]]}}]}, 3, ["a", "1", "b/~"]),
        ({"a": [1, {"b/~": {"c": [[2]]}}]}, 1, ["a"]),
        ([[], [[]], {'q"[': [0, 1, [[]]]}], 3, ["2", 'q"[', "2"]),
        ({"x": '{"[', "y": {"z": {}}}, 2, ["y", "z"]),
    ],
)
def test_path_to_the_first_container_too_deep(value: Any, limit: int, path: list[str]) -> None:
    assert Structure.of(json.dumps(value).encode()).path_to_depth(limit) == path


@pytest.mark.parametrize(
    "text",
    [
        b'"' + b'\\"' * 1_000_000,  # every quote escaped: a backtracking string regex would be quadratic
        b"[" * 1_000_000 + b'"' * 1_000_000,
        b"[1," * 1_000_000 + b"]" * 1_000_000,
    ],
)
def test_hostile_text_is_linear(text: bytes) -> None:
    start = time.perf_counter()
    structure = Structure.of(text)
    if structure.max_depth > 64:
        structure.path_to_depth(64)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("text", [b"", b"]]]", b"{{{", b'{"a" [', b'"\\', b"[\xff\xfe]"])
def test_invalid_json_does_not_raise(text: bytes) -> None:
    structure = Structure.of(text)
    if structure.max_depth > 1:
        assert len(structure.path_to_depth(1)) == 1
