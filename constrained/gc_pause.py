"""Python's cyclic garbage collector paused while a compile or a state's first mask runs.

Contract: `gc_paused()` is a context manager (nestable, thread-safe): while any such block runs anywhere in
the process, `gc.isenabled()` is False, unless the host had disabled the collector itself, in which case it
stays disabled after the last block ends; otherwise it is enabled again then. A compile or a first mask
allocates tens of thousands of small objects (interned terms, linear forms) that live as long as their
grammar, so the generational collector would otherwise run tens of times in the middle of one, and a full
collection walks every object of the host process (a loaded model's included): measured on the dev corpus,
~10% of the median time to first mask and a third of the mean. Reference counting still frees everything
that is not a cycle meanwhile, and these code paths create none that outlive them.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_running = 0  # blocks open now (under the lock)
_was_enabled = False  # the collector's state when the first of them began


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off while any such block runs; its former state after the last one ends."""
    global _running, _was_enabled
    with _LOCK:
        if not _running:
            _was_enabled = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _LOCK:
            _running -= 1
            if not _running and _was_enabled:
                gc.enable()
