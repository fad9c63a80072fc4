"""Python's recursion limit, raised while deep work runs and restored after.

Contract: `deep_recursion(frames)` is a context manager (nestable, thread-safe) during which
`sys.getrecursionlimit()` is at least `frames`; when the last such block anywhere in the process ends, the
limit is the one in force before the first began. Both the schema walk (one level of frames per sub-schema)
and the token automaton's derivatives (one level per nested group or chained rule: an object's optional
properties) recurse as deep as the grammar nests.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_running = 0  # blocks open now (under the lock)
_original = 0  # the limit before the first of them


@contextmanager
def deep_recursion(frames: int) -> Iterator[None]:
    """Python's recursion limit at least `frames` while any such block runs, the original one after."""
    global _running, _original
    with _LOCK:
        if not _running:
            _original = sys.getrecursionlimit()
        _running += 1
        if frames > sys.getrecursionlimit():
            sys.setrecursionlimit(frames)
    try:
        yield
    finally:
        with _LOCK:
            _running -= 1
            if not _running:
                sys.setrecursionlimit(_original)
