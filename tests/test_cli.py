"""The `constrained` command line in a subprocess: exit codes, stdout and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "constrained.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def schema_file(tmp_path) -> Path:
    path = tmp_path / "person.json"
    path.write_text(json.dumps(SCHEMA))
    return path


@pytest.mark.parametrize("command", [[], ["serve"], ["compile"], ["generate"], ["bench"]])
def test_help(command):
    result = run(*command, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: constrained" in result.stdout


def test_serve_has_a_flag_per_limit():
    """`serve` builds `Limits` from its flags: every limit (the JSON nesting depth included) has one."""
    from server.limits import Limits

    result = run("serve", "--help", timeout=60)
    for name in Limits.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in result.stdout, name


def test_compile_explain(schema_file):
    result = run("compile", str(schema_file), "--tokenizer", "smollm2", "--explain")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "compiled in" in out and "grammar:" in out and "automaton:" in out
    assert "/properties/age" in out and "maximum, minimum, type" in out


def test_compile_errors(tmp_path):
    unsupported = tmp_path / "lookaround.json"
    unsupported.write_text(json.dumps({"type": "object", "properties": {"a": {"pattern": "(?<=x)y"}}}))
    result = run("compile", str(unsupported))
    assert result.returncode == 2
    assert "keyword 'pattern'" in result.stderr and "/properties/a" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"type": "strin"}))
    result = run("compile", str(invalid))
    assert result.returncode == 2 and "invalid JSON schema" in result.stderr
    result = run("compile", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and result.stderr.startswith("constrained: error: cannot read schema")


def test_bench_unknown_script():
    result = run("bench", "no-such-bench", timeout=60)
    assert result.returncode == 2 and "unknown benchmark" in result.stderr


def test_generate_embedded(schema_file, embedded):  # `embedded`: the de-quantized cache exists
    result = run(
        "generate", "--schema", str(schema_file), "--prompt", "Invent a person.", "--max-tokens", "40",
        "--seed", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "finish_reason=" in result.stderr
    jsonschema.validate(json.loads(result.stdout), SCHEMA)  # closed in time even when cut by the limit


def test_generate_bad_arguments(schema_file):
    result = run("generate", "--schema", str(schema_file), "--prompt", "x", "--max-tokens", "0", timeout=60)
    assert result.returncode == 2 and "--max-tokens" in result.stderr
