"""Smoke test of the benchmarks: they run on a tiny MaskBench-format fixture and print their last line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIXTURE = [
    {
        "id": "smoke_bool",
        "description": "an object with one boolean",
        "meta": {},
        "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
        "tests": [
            {"description": "valid", "valid": True, "data": {"ok": True}},
            {"description": "string is not boolean", "valid": False, "data": {"ok": "true"}},
        ],
    },
    {
        "id": "smoke_enum",
        "description": "an enum",
        "meta": {},
        "schema": {"enum": ["red", "green", 3]},
        "tests": [
            {"description": "valid string", "valid": True, "data": "green"},
            {"description": "valid number", "valid": True, "data": 3},
            {"description": "not listed", "valid": False, "data": "blue"},
        ],
    },
    {
        "id": "smoke_int",
        "description": "a bounded integer",
        "meta": {},
        "schema": {"type": "integer", "minimum": 0, "maximum": 99},
        "tests": [
            {"description": "valid", "valid": True, "data": 42},
            {"description": "too big", "valid": False, "data": 100},
            {"description": "not integer", "valid": False, "data": 1.5},
        ],
    },
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / "Smoke.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FIXTURE), encoding="utf-8")
    return folder


def _run(script: str, data_dir: Path) -> list[str]:
    cmd = [sys.executable, str(ROOT / "bench" / script), "--data", str(data_dir)]
    cmd += ["--limit", "3", "--tokenizer", "smollm2", "--engines", "ours"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()


@pytest.mark.timeout(150)
def test_conformance_smoke(data_dir: Path) -> None:
    lines = _run("conformance.py", data_dir)
    assert lines[-1] == f"ours: passing={len(FIXTURE)} invalidation_errors=0", lines[-1]  # all of them


@pytest.mark.timeout(150)
def test_masks_smoke(data_dir: Path) -> None:
    lines = _run("masks.py", data_dir)
    number = r"\d+(?:\.\d+)?"
    pattern = (
        rf"ours: ttfm_p50_us={number} ttfm_p99_us={number} tbm_p50_us={number} tbm_p99_us={number} "
        rf"tbm_p999_us={number}"
    )
    assert re.fullmatch(pattern, lines[-1]), lines[-1]


@pytest.mark.timeout(150)
def test_restart_smoke(data_dir: Path) -> None:
    """Every fixture schema is timed cold and after a restart (served from the disk cache)."""
    cmd = [sys.executable, str(ROOT / "bench" / "restart.py"), "--data", str(data_dir), "--limit", "3"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    number = r"\d+\.\d\d"
    pattern = rf"restart: schemas={len(FIXTURE)} cold_ttfm_p50_ms={number} restart_ttfm_p50_ms={number} "
    assert re.fullmatch(pattern + rf"restart_ttfm_p99_ms={number}", proc.stdout.strip().splitlines()[-1])


SCALE = ROOT.parent / "shared" / "corpora" / "scale" / "make_scale.py"


@pytest.mark.timeout(150)
@pytest.mark.skipif(not SCALE.is_file(), reason="../shared/corpora/scale is absent")
def test_scale_smoke() -> None:
    """bench/scale.py generates the schemas itself (no --data); the two smallest enums compile and pass."""
    cmd = [sys.executable, str(ROOT / "bench" / "scale.py"), "--tokenizer", "smollm2", "--engines", "ours"]
    cmd += ["--families", "enum", "--max-size", "100", "--timeout", "60"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ours: compiled=2/2 passing=2/2 ttfm_growth=\d+\.\d\d", last), last
