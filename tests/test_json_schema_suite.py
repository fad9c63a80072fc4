"""The official JSON-Schema-Test-Suite, every draft folder present: no invalid instance is ever accepted.

Reads ``<project>/../shared/corpora/json-schema-test-suite/tests/<draft>/*.json`` (skipped when absent), gives
each schema its folder's dialect (`$schema`), compiles it for a byte-level vocabulary (one token per byte)
and walks every instance (compact JSON) through a matcher. A schema the compiler refuses (`SchemaError`,
`GrammarError`) is counted, never a failure; any other exception is a crash, and fails.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from bench.engines import load_corpus
from constrained.grammar import GrammarCompiler, GrammarError
from constrained.tokenizer_info import TokenizerInfo
from grammars import SchemaError

SUITE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "json-schema-test-suite" / "tests"
DRAFTS = ["draft4", "draft6", "draft2019-09", "draft2020-12"]
EOS = 256


@pytest.fixture(scope="module")
def byte_compiler() -> GrammarCompiler:
    table = tuple(bytes([b]) for b in range(256)) + (b"",)
    return GrammarCompiler(TokenizerInfo(table, frozenset({EOS}), frozenset({EOS}), EOS + 1, "bytes"))


def accepts(compiler: GrammarCompiler, schema, text: str) -> bool:
    matcher = compiler.compile_json_schema(schema).matcher()
    return matcher.accept_tokens(list(text.encode())) and matcher.accept_token(EOS)


def run_folder(compiler: GrammarCompiler, folder: Path) -> tuple[collections.Counter, list[str], list[str]]:
    """(counts, invalid instances accepted, crashes) over one draft folder."""
    counts: collections.Counter[str] = collections.Counter()
    invalid_accepted, crashes = [], []
    for case in load_corpus(folder).cases:
        counts["schemas"] += 1
        try:
            compiler.compile_json_schema(case.schema)
        except (SchemaError, GrammarError):
            counts["refused"] += 1
            continue
        except Exception as exc:  # anything else is a bug to report
            crashes.append(f"{case.id}: {type(exc).__name__}: {exc}"[:200])
            continue
        for inst in case.instances:
            accepted = accepts(compiler, case.schema, inst.text)
            counts["valid" if inst.valid else "invalid"] += 1
            counts["valid_refused"] += inst.valid and not accepted
            if accepted and not inst.valid:
                invalid_accepted.append(f"{case.id} [{inst.description}] {inst.text[:80]}")
    return counts, invalid_accepted, crashes


@pytest.mark.parametrize("draft", DRAFTS)
def test_suite_draft(byte_compiler: GrammarCompiler, draft: str) -> None:
    folder = SUITE / draft
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    counts, invalid_accepted, crashes = run_folder(byte_compiler, folder)
    print(f"\n{draft}: {dict(counts)}")
    assert not invalid_accepted, invalid_accepted
    assert not crashes, crashes
    assert counts["refused"] < counts["schemas"] / 2


SIBLING_ID = {  # the suite's "$ref prevents a sibling $id from changing the base uri", without the suite
    "$id": "http://localhost:1234/sibling_id/base/",
    "definitions": {
        "foo": {"$id": "http://localhost:1234/sibling_id/foo.json", "type": "string"},
        "base_foo": {"$id": "foo.json", "type": "number"},
    },
    "allOf": [{"$id": "http://localhost:1234/sibling_id/", "$ref": "foo.json"}],
}


@pytest.mark.parametrize(
    ("dialect", "number_ok"),
    [
        ("http://json-schema.org/draft-06/schema#", True),
        ("http://json-schema.org/draft-07/schema#", True),
        ("https://json-schema.org/draft/2020-12/schema", False),  # from 2019-09 on, a sibling $id applies
    ],
)
def test_ref_ignores_sibling_id_before_2019(
    byte_compiler: GrammarCompiler, dialect: str, number_ok: bool
) -> None:
    schema = {"$schema": dialect, **SIBLING_ID}
    assert accepts(byte_compiler, schema, "1") is number_ok
    assert accepts(byte_compiler, schema, '"a"') is not number_ok


def test_draft4_ref_ignores_sibling_id(byte_compiler: GrammarCompiler) -> None:
    schema = json.loads(json.dumps(SIBLING_ID).replace('"$id"', '"id"'))
    schema["$schema"] = "http://json-schema.org/draft-04/schema#"
    assert accepts(byte_compiler, schema, "1") and not accepts(byte_compiler, schema, '"a"')
