"""Schema compiles in worker processes: the JSON-Schema walk and the automaton's initialisation never hold the
serving process's GIL, and a compile past its deadline is stopped in the worker (or, failing that, killed).

Contract: `IsolatedCompiler(workers)` is a drop-in for `grammars.compile_json_schema(schema, options)`
(`GrammarCompiler(compile_schema=...)`): for a schema it accepts, the same `CompiledSchema`; the same
`SchemaError`s, but computed in one of `workers` spawned processes. Within the same `options.compile_seconds`
budget the worker then runs, on the compiled grammar, the automaton work `GrammarCompiler` and the server do
before the first mask (`check_automaton`: `LazyDFA` init, i.e. parse + productivity of the root, whose
intersections run a bounded search; the initial state's shortest completion, `Grammar.min_tokens`; the
initial state's row). A grammar whose automaton fails there (empty language, unsupported construct, search
or state limit) is a `SchemaError("cannot build a token automaton: ...")`; one that does not finish within
the budget is a `SchemaError("compilation exceeds N s ...")`. So a hostile schema is refused by the worker
and never reaches the serving process.

The worker ships back only the `CompiledSchema`: the serving process repeats that automaton initialisation
(`GrammarCompiler` builds its own `LazyTokenIndex` and there is no hook to hand it a prebuilt one). For the
schemas that pass, that repetition costs what it cost the worker, less than the budget by construction.

Deadline: the worker arms a one-shot SIGALRM timer for `compile_seconds` when a schema arrives; it interrupts
the Python code of the walk or the automaton wherever it is (no cooperation needed), so the overshoot is the
time to the next bytecode boundary (measured: under 0.12 s, IPC included, for every hostile kind of
`bench/load.py`), and the worker stays up for the next schema. A worker that has still not answered
`grace_s` after the budget (stuck in a long C call) or that died is killed and replaced. The budget is
wall-clock time, as the walk's own deadline.

Workers import their modules and compile a tiny schema when they start, not during a timed compile, and run
at a lower CPU priority (`nice`, default +10): on 2 cores a compile then yields the cores to decoding
(`bench/load.py --hostile`, llama.cpp runtime: ratio 2.9-3.2 with nice 0, 1.1-1.25 with nice 10), while a
compile that runs during decoding gets slower (a 1,000-property schema: 0.8-1.8 s with nice 0, 1.2-1.9 s with
nice 10), so a schema near its budget is more likely to be refused on a busy server. Thread-safe; `close()`
stops the workers.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
from dataclasses import replace
from typing import Any

from grammars import CompiledSchema, JsonSchemaOptions, SchemaError
from grammars.ir import RuleGrammar

MAX_TIMER_S = 1e6  # a budget above this (or infinite) is not timed
_WARM_UP = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}}}


class IsolatedCompiler:
    def __init__(
        self, workers: int = 2, grace_s: float = 0.5, *, max_states: int = 200_000, nice: int = 10
    ) -> None:
        """`max_states`: the automaton state budget the server's `GrammarCompiler` uses; `nice`: the workers'
        CPU priority increment (0: same priority as the server)."""
        self.grace_s = grace_s
        context = mp.get_context("spawn")  # no inherited threads or model weights
        self._workers = [_Worker(context, max_states, nice) for _ in range(workers)]
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

    def __init__(self, context, max_states: int, nice: int) -> None:
        self._context = context
        self._args = (max_states, nice)
        self._start()

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child, *self._args), daemon=True)
        self._process.start()
        child.close()

    def compile(self, payload: bytes, budget_s: float, grace_s: float) -> CompiledSchema:
        wait = budget_s + grace_s
        try:
            self._conn.send_bytes(payload)
            answered = self._conn.poll(wait if math.isfinite(wait) else None)
            reply = self._conn.recv_bytes() if answered else None
        except (EOFError, OSError):  # the worker died (out of memory, a crash): replace it
            self._restart()
            raise SchemaError("the compiler process died", "$", "") from None
        if reply is None:
            self._restart()
            raise SchemaError(f"compilation exceeds {budget_s} s", "$", "")
        ok, value = pickle.loads(reply)
        if ok:
            return value
        raise value

    def _restart(self) -> None:
        self.stop()
        self._start()

    def stop(self) -> None:
        self._process.kill()
        self._process.join()
        self._conn.close()


def check_automaton(grammar: RuleGrammar, max_states: int = 200_000) -> None:
    """The automaton work done before a grammar's first mask (`GrammarCompiler` + `Grammar.min_tokens` +
    the initial row); `SchemaError` when it fails. Runs in the workers; exposed for tests."""
    from constrained.token_index.automaton import DEAD, LazyDFA

    try:
        dfa = LazyDFA(grammar, max_states=max_states)
        if dfa.initial != DEAD:
            dfa.completion(dfa.initial)
            dfa.row(dfa.initial)
    except Exception as exc:  # RegexUnsupported, and whatever GrammarCompiler would turn into a GrammarError
        raise SchemaError(f"cannot build a token automaton: {exc}", "$", "") from None


class _Overrun(BaseException):
    """Raised by a worker's SIGALRM handler; a BaseException, so that no `except Exception` swallows it."""


_armed = False  # whether the worker's pending alarm may raise (at most once per schema)


def _on_alarm(signum, frame) -> None:
    global _armed
    if _armed:
        _armed = False
        raise _Overrun


def _compile(schema: Any, options: JsonSchemaOptions, max_states: int) -> tuple[bool, Any]:
    """(True, result) or (False, exception) for one schema, within `options.compile_seconds`."""
    global _armed
    from grammars import compile_json_schema

    stage = "the schema walk"
    budget = options.compile_seconds
    timed = hasattr(signal, "setitimer") and 0 < budget < MAX_TIMER_S
    try:
        try:
            if timed:
                _armed = True
                signal.setitimer(signal.ITIMER_REAL, budget)
            compiled = compile_json_schema(schema, options)
            stage = "building the automaton"
            check_automaton(compiled.grammar, max_states)
            return True, compiled
        finally:  # the handler raises at most once: once it has, or once this line has run, nothing else does
            _armed = False
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _Overrun:
        return False, SchemaError(f"compilation exceeds {budget} s ({stage})", "$", "")
    except Exception as exc:  # SchemaError and any crash: the caller re-raises it
        return False, exc


def _serve(conn, max_states: int = 200_000, nice: int = 0) -> None:
    """Worker loop: compile each schema received, send back (True, result) or (False, exception)."""
    if nice:
        os.nice(nice)
    signal.signal(signal.SIGALRM, _on_alarm)
    _compile(_WARM_UP, JsonSchemaOptions(), max_states)  # imports (numba, ...) now, not in a timed compile
    while True:
        try:
            schema, options = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        reply = _compile(schema, options, max_states)
        try:
            conn.send_bytes(pickle.dumps(reply))
        except (pickle.PicklingError, TypeError, RecursionError) as exc:
            conn.send_bytes(pickle.dumps((False, SchemaError(f"compiler reply failed: {exc}", "$", ""))))
