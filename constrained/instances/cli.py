"""The `constrained instances` command.

Contract: `add_arguments(parser)` declares `schema` (a file, '-' for stdin), `-n`, `--invalid`, `--seed`,
`--model`, `--coverage`. `run_instances(args, out, err)` prints one compact JSON instance per line (random
walks, or model samples with `--model`); with `--invalid` one
`{"instance": ..., "violates": kw, "pointer": schema_ptr, "path": instance_ptr}` per line (walks only);
`--coverage` prints the coverage summary as JSON on `err`. It returns the exit status: 1 when fewer
instances than asked could be produced.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from constrained.instances.common import Instance, NearMiss
from constrained.instances.generator import InstanceGenerator
from constrained.instances.model import generate_with_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `constrained instances` arguments."""
    parser.add_argument("schema", help="JSON schema file ('-' reads stdin)")
    parser.add_argument("-n", type=int, default=100, help="instances to produce (default 100)")
    parser.add_argument(
        "--invalid",
        action="store_true",
        help='near-miss invalid instances, one {"instance","violates","pointer","path"} per line',
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--model", default=None, help="sample with a model ('embedded', a folder or a .gguf) instead of walks"
    )
    parser.add_argument("--coverage", action="store_true", help="print a coverage summary (JSON) to stderr")


def run_instances(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `constrained instances`; returns the exit status (1 when fewer instances than asked)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if args.n < 0:
        raise ValueError("-n must be >= 0")
    if args.schema == "-":
        schema = json.load(sys.stdin)
    else:
        with open(args.schema, encoding="utf-8") as handle:
            schema = json.load(handle)
    if args.model is not None and args.invalid:
        raise ValueError("--invalid uses random walks; it does not take --model")
    records: list[Instance] | list[NearMiss]
    if args.model is not None:
        records = generate_with_model(schema, args.n, model=args.model, seed=args.seed)
        gen = None
    else:
        gen = InstanceGenerator(schema)
        records = gen.invalid(args.n, seed=args.seed) if args.invalid else gen.valid(args.n, seed=args.seed)
    for record in records:
        print(record.to_json(), file=out)
    if args.coverage:
        gen = gen or InstanceGenerator(schema)
        print(json.dumps(gen.coverage(records).summary()), file=err)
    if len(records) < args.n:
        print(f"constrained: only {len(records)} of {args.n} instances could be produced", file=err)
        return 1
    return 0
