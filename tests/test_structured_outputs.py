"""The `structured_outputs` extension (vLLM's shape): regex and choice constraints, enforce or reject."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest

from tests.conftest import TEST_MODEL_ID


def ask(server, extension, **extra):
    payload = {
        "model": TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "answer"}],
        "max_tokens": 24,
        "structured_outputs": extension,
        **extra,
    }
    return httpx.post(server.url + "/v1/chat/completions", json=payload, timeout=120)


@pytest.mark.parametrize("regex", [r"[0-9]{3}-[a-z]{2,4}", r"(?:yes|no|maybe)!?", r"\(a\|b\) [A-F0-9]{4}"])
def test_regex_outputs_fullmatch(live_server, regex):
    for seed in range(3):
        body = ask(live_server, {"regex": regex}, seed=seed).json()
        assert re.fullmatch(regex, body["choices"][0]["message"]["content"]), body


def test_choice_outputs_are_one_of_the_choices(live_server):
    choices = ["red", "green (dark)", "blue?", "a|b"]
    seen = set()
    for seed in range(8):
        body = ask(live_server, {"choice": choices}, seed=seed).json()
        content = body["choices"][0]["message"]["content"]
        assert content in choices, body
        seen.add(content)
    assert len(seen) > 1


def test_json_extension_validates(live_server):
    schema = {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3}
    body = ask(live_server, {"json": schema}, seed=4).json()
    jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), schema)


@pytest.mark.parametrize(
    ("extension", "param"),
    [
        ({"regex": "(a)\\1"}, "structured_outputs.regex"),
        ({"regex": "a(?=b)"}, "structured_outputs.regex"),
        ({"regex": "[0-9", "choice": ["x"]}, "structured_outputs"),
        ({"choice": []}, "structured_outputs.choice"),
        ({"grammar": "root ::= 'a'"}, "structured_outputs.grammar"),
    ],
)
def test_bad_extensions_are_400(live_server, extension, param):
    response = ask(live_server, extension)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
