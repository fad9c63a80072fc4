"""The on-disk compile cache: round trip, torn entries, eviction, and a fresh compiler that skips the walk."""

from __future__ import annotations

import os
import pickle
import threading
import time

from constrained.disk_cache import DiskCache
from constrained.grammar import GrammarCompiler
from constrained.tokenizer_info import TokenizerInfo
from grammars import compile_json_schema

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_round_trip_and_torn_entries(tmp_path):
    cache = DiskCache(tmp_path)
    compiled = compile_json_schema(SCHEMA)
    assert cache.get("k") is None
    cache.put("k", compiled)
    assert cache.get("k") == compiled
    entry = next(tmp_path.glob("*.pickle"))
    entry.write_bytes(entry.read_bytes()[:10])  # a torn write by some other tool
    assert cache.get("k") is None and not entry.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_least_recently_used_entries_go_first(tmp_path):
    compiled = [compile_json_schema({"const": i}) for i in range(4)]
    size = len(pickle.dumps(compiled[0]))
    cache = DiskCache(tmp_path, max_bytes=int(size * 3.5))
    for i in range(3):
        cache.put(str(i), compiled[i])
    for i, path in enumerate(sorted(tmp_path.glob("*.pickle"), key=lambda p: p.stat().st_mtime)):
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.get("0") is not None  # touched: now the most recent
    cache.put("3", compiled[3])
    assert [cache.get(k) is not None for k in "0123"] == [True, False, True, True]


def test_concurrent_writers_leave_a_whole_entry(tmp_path):
    cache = DiskCache(tmp_path)
    compiled = compile_json_schema(SCHEMA)
    threads = [threading.Thread(target=cache.put, args=("k", compiled)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("k") == compiled
    assert len(list(tmp_path.glob("*.pickle"))) == 1 and not list(tmp_path.glob("*.tmp"))


def test_a_fresh_compiler_does_not_walk_a_known_schema(tmp_path, tokenizer):
    info = TokenizerInfo.from_huggingface(tokenizer)
    walks = []

    def counting(schema, options):
        walks.append(schema)
        return compile_json_schema(schema, options)

    first = GrammarCompiler(info, compile_schema=counting, disk_cache=DiskCache(tmp_path))
    before = first.compile_json_schema(SCHEMA)
    restarted = GrammarCompiler(info, compile_schema=counting, disk_cache=DiskCache(tmp_path))
    after = restarted.compile_json_schema(SCHEMA)
    assert len(walks) == 1
    assert after.source == before.source
    matcher = after.matcher()
    assert matcher.accept_tokens(tokenizer.encode('{"n":42}', add_special_tokens=False))
    assert matcher.can_terminate()
