"""Schema compiles in worker processes: the JSON-Schema walk never holds the serving process's GIL, and a
compile past its deadline is killed.

Contract: `IsolatedCompiler(workers)` is a drop-in for `grammars.compile_json_schema(schema, options)`
(`GrammarCompiler(compile_schema=...)`): same result, same `SchemaError`s, but computed in one of `workers`
spawned processes. A compile still running `grace_s` after `options.compile_seconds` is killed and reported
as `SchemaError("compilation exceeds ...")`; its worker is replaced, so a hostile schema costs at most its
budget and never slows decoding. Thread-safe; `close()` stops the workers.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
from dataclasses import replace
from typing import Any

from grammars import CompiledSchema, JsonSchemaOptions, SchemaError


class IsolatedCompiler:
    def __init__(self, workers: int = 2, grace_s: float = 0.5) -> None:
        self.grace_s = grace_s
        context = mp.get_context("spawn")  # no inherited threads or model weights
        self._workers = [_Worker(context) for _ in range(workers)]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)

    def __call__(self, schema: Any, options: JsonSchemaOptions | None = None) -> CompiledSchema:
        options = options or JsonSchemaOptions()
        try:
            payload = pickle.dumps((schema, replace(options, remotes=dict(options.remotes))))
        except (RecursionError, pickle.PicklingError, TypeError) as exc:
            raise SchemaError(f"the schema cannot be sent to a compiler: {exc}", "$", "") from None
        worker = self._idle.get()
        try:
            return worker.compile(payload, options.compile_seconds, self.grace_s)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()


class _Worker:
    """One compiler process and its pipe; restarted after a kill."""

    def __init__(self, context) -> None:
        self._context = context
        self._start()

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()

    def compile(self, payload: bytes, budget_s: float, grace_s: float) -> CompiledSchema:
        self._conn.send_bytes(payload)
        if not self._conn.poll(budget_s + grace_s):
            self.stop()
            self._start()
            raise SchemaError(f"compilation exceeds {budget_s} s", "$", "")
        ok, value = pickle.loads(self._conn.recv_bytes())
        if ok:
            return value
        raise value

    def stop(self) -> None:
        self._process.kill()
        self._process.join()
        self._conn.close()


def _serve(conn) -> None:
    """Worker loop: compile each schema received, send back (True, result) or (False, exception)."""
    from grammars import compile_json_schema

    while True:
        try:
            schema, options = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            reply = (True, compile_json_schema(schema, options))
        except Exception as exc:  # SchemaError and any crash: the caller re-raises it
            reply = (False, exc)
        try:
            conn.send_bytes(pickle.dumps(reply))
        except (pickle.PicklingError, TypeError, RecursionError) as exc:
            conn.send_bytes(pickle.dumps((False, SchemaError(f"compiler reply failed: {exc}", "$", ""))))
