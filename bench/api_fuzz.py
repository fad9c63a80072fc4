"""API fuzzing at scale: `tests/test_api_fuzz.py` (schemathesis over the live server's `/openapi.json`,
positive and negative requests, on the random-weight model) with a large example budget.

    python bench/api_fuzz.py [--examples 500]

CI runs the same test with 25 examples per operation and mode. The last line:
`api_fuzz: examples=N passed=P failed=F seconds=S` (failed counts failing tests: a 5xx, a 4xx that is not
OpenAI-shaped, a refused valid request or an accepted invalid one, a 2xx off its documented schema, or a
server that no longer answers afterwards; pytest's output above names the case).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500, help="examples per operation and mode")
    args = parser.parse_args(argv)
    env = {**os.environ, "API_FUZZ_EXAMPLES": str(args.examples)}
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_api_fuzz.py"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error)", proc.stdout)}
    print(
        f"api_fuzz: examples={args.examples} passed={counts.get('passed', 0)} "
        f"failed={counts.get('failed', 0) + counts.get('error', 0)} seconds={time.perf_counter() - start:.0f}"
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
