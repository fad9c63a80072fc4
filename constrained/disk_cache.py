"""Compiled schemas on disk, so a restarted server serves a known schema without walking it again.

Contract: `DiskCache(folder, max_bytes)` maps a key (any text: the schema's JSON plus its options) to a
pickled `grammars.CompiledSchema` (the rule grammar, tokenizer-independent). Entries are named by the
SHA-256 of the key and of the compiler's fingerprint (the source of the `grammars` package), so an entry
written by another version of the compiler is never read. Writes go to a temporary file renamed into
place: concurrent writers and a crash mid-write leave the old entry, the new one, or none — never a torn
one; an unreadable entry counts as a miss and is removed. Past `max_bytes` the least recently used entries
(by modification time; a hit touches its entry) are deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from functools import cache
from pathlib import Path

import grammars
from grammars import CompiledSchema

log = logging.getLogger(__name__)


@cache
def compiler_fingerprint() -> str:
    """SHA-256 of the `grammars` package's source: any change to the compiler invalidates the cache."""
    digest = hashlib.sha256()
    for path in sorted(Path(grammars.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class DiskCache:
    def __init__(self, folder: Path, max_bytes: int = 256 * 2**20) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(f"{compiler_fingerprint()}\0{key}".encode()).hexdigest()
        return self.folder / f"{digest}.pickle"

    def get(self, key: str) -> CompiledSchema | None:
        path = self._path(key)
        try:
            value = pickle.loads(path.read_bytes())
            os.utime(path)  # recently used
        except FileNotFoundError:
            return None
        except Exception as exc:  # torn by a foreign writer, or an old format: drop it
            log.warning("dropping unreadable cache entry %s: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        return value if isinstance(value, CompiledSchema) else None

    def put(self, key: str, value: CompiledSchema) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > self.max_bytes:
            return
        try:
            with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".tmp", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, self._path(key))
        except OSError as exc:  # a full or read-only disk: the cache is an optimisation only
            log.warning("compile cache write failed: %s", exc)
            Path(tmp.name).unlink(missing_ok=True)
            return
        self._evict()

    def _evict(self) -> None:
        entries = []
        for path in self.folder.glob("*.pickle"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
