"""What the compiler benchmarks share: corpora, one adapter per engine, and worker processes with timeouts.

- `load_corpus(folder, limit)` reads MaskBench folders (`*.jsonl`, one schema a line) and
  JSON-Schema-Test-Suite draft folders (`*.json`, groups of {description, schema, tests}; the folder's
  dialect, `draft4` ... `draft2020-12`, is given to its schemas as `$schema`); `limit` caps the schemas read
  per file.
- An adapter (`ours`, `llguidance`, `xgrammar`, `outlines`) compiles a JSON schema for one tokenizer and
  walks token ids: `compile`, `matcher`, `accept`, `can_end`, `fill`. Every engine gets the same token ids
  (the instance serialized compactly and tokenized once, in the parent). `compile_grammar(kind, text)` takes
  a text grammar instead (`GrammarText`, kind "lark", "ebnf" or "gbnf"); an engine without that syntax
  refuses it as unsupported. Jobs take either a JSON schema or a `GrammarText`.
- `EngineWorker` runs one adapter in its own process (spawned, single-threaded); `call(job, timeout)` kills
  and restarts the process when a job overruns, so a hanging compile cannot stall a benchmark.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENGINE_NAMES = ("ours", "llguidance", "xgrammar", "outlines")


# ---------------------------------------------------------------------------------------------- corpora
@dataclass
class Instance:
    description: str
    valid: bool
    text: str
    token_ids: list[int] = field(default_factory=list)


@dataclass
class SchemaCase:
    id: str
    schema: Any
    instances: list[Instance]


@dataclass
class Corpus:
    """One --data folder: its schemas, and whether it is the Test-Suite (scored per instance too)."""

    label: str
    test_suite: bool
    cases: list[SchemaCase]


# Test-Suite folders name their dialect; their schemas carry no `$schema` (the compilers default to 2020-12).
SUITE_DIALECTS = {
    "draft3": "http://json-schema.org/draft-03/schema#",
    "draft4": "http://json-schema.org/draft-04/schema#",
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}


def with_dialect(schema: Any, folder: str) -> Any:
    """`schema` with the `$schema` of its Test-Suite folder (`draft4`, ...) unless it names one itself."""
    uri = SUITE_DIALECTS.get(folder)
    if uri is None or not isinstance(schema, dict) or "$schema" in schema:
        return schema
    return {"$schema": uri, **schema}


def serialize(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def load_corpus(folder: Path, limit: int | None = None) -> Corpus:
    files = sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .jsonl (MaskBench) or .json (Test-Suite) files")
    cases: list[SchemaCase] = []
    suite = False
    for path in files:
        taken = 0
        if path.suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 is data
            records = (json.loads(line) for line in lines if line.strip())
            for number, record in enumerate(records):
                if limit is not None and taken >= limit:
                    break
                instances = [
                    Instance(t.get("description", ""), bool(t["valid"]), serialize(t["data"]))
                    for t in record["tests"]
                ]
                cases.append(
                    SchemaCase(str(record.get("id", f"{path.stem}:{number}")), record["schema"], instances)
                )
                taken += 1
        else:
            suite = True
            for number, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                if limit is not None and taken >= limit:
                    break
                instances = [
                    Instance(t.get("description", ""), bool(t["valid"]), serialize(t["data"]))
                    for t in group["tests"]
                ]
                case_id = f"{path.stem}#{number} {group.get('description', '')}"
                cases.append(SchemaCase(case_id, with_dialect(group["schema"], folder.name), instances))
                taken += 1
    label = folder.name if folder.name not in ("data", "tests") else f"{folder.parent.name}/{folder.name}"
    return Corpus(label, suite, cases)


def tokenize_cases(cases: list[SchemaCase], tokenizer) -> None:
    for case in cases:
        for inst in case.instances:
            inst.token_ids = tokenizer.encode(inst.text, add_special_tokens=False)


def resolve_data_dir(arg: str) -> Path:
    """A --data folder as given, else relative to the project root (`../shared/...` works from anywhere)."""
    path = Path(arg).expanduser()
    if not path.exists():
        candidate = Path(__file__).resolve().parent.parent / arg
        if candidate.exists():
            path = candidate
    if not path.is_dir():
        raise SystemExit(f"--data {arg}: not a folder")
    return path


def parse_engines(arg: str) -> list[str]:
    engines = [e.strip() for e in arg.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINE_NAMES]
    if unknown or not engines:
        raise SystemExit(f"--engines: unknown {unknown}; choose from {', '.join(ENGINE_NAMES)}")
    return engines


# ---------------------------------------------------------------------------------------------- adapters
class CompileFailure(Exception):
    """The engine refused the schema. `kind` is "unsupported" (a clean refusal) or "crash" (anything else)."""

    def __init__(self, kind: str, message: str, keyword: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.keyword = keyword


@dataclass(frozen=True)
class GrammarText:
    """A text grammar for `compile_grammar`, in place of a JSON schema: kind "lark", "ebnf" or "gbnf"."""

    kind: str
    text: str


class Adapter:
    name = "?"
    grammar_kinds: tuple[str, ...] = ()  # the text-grammar syntaxes `compile_grammar` takes

    def __init__(self, tokenizer_name: str) -> None:
        from bench.vocabularies import load_tokenizer

        self.tokenizer, self.info = load_tokenizer(tokenizer_name)
        self.vocab_size = self.info.vocab_size
        self.eos = min(self.info.eos_token_ids)

    def clear_cache(self) -> None:  # drop compiled grammars so the next compile is cold
        pass

    def compile(self, schema: Any) -> Any:
        raise NotImplementedError

    def compile_grammar(self, kind: str, text: str) -> Any:
        raise CompileFailure("unsupported", f"{self.name} takes no {kind} grammar", f"<{kind}>")

    def compile_source(self, source: Any) -> Any:
        """`compile_grammar` for a `GrammarText`, else `compile` (a JSON schema)."""
        if not isinstance(source, GrammarText):
            return self.compile(source)
        if source.kind not in self.grammar_kinds:
            return Adapter.compile_grammar(self, source.kind, source.text)  # raises: unsupported
        return self.compile_grammar(source.kind, source.text)

    def matcher(self, compiled: Any) -> Any:
        raise NotImplementedError

    def accept(self, matcher: Any, token_id: int) -> bool:
        raise NotImplementedError

    def can_end(self, matcher: Any) -> bool:
        raise NotImplementedError

    def new_bitmask(self) -> Any:
        import numpy as np

        return np.full((1, (self.vocab_size + 31) // 32), -1, dtype=np.int32)

    def fill(self, matcher: Any, bitmask: Any) -> None:
        raise NotImplementedError

    def memory_bytes(self, compiled: Any) -> int | None:
        return None


class OursAdapter(Adapter):
    name = "ours"
    grammar_kinds = ("lark", "gbnf")

    def __init__(self, tokenizer_name: str) -> None:
        super().__init__(tokenizer_name)
        from constrained.grammar import GrammarCompiler

        self.compiler = GrammarCompiler(self.info)

    def clear_cache(self) -> None:
        with self.compiler._lock:
            self.compiler._cache.clear()

    def compile(self, schema: Any) -> Any:
        return self._compile(lambda: self.compiler.compile_json_schema(schema))

    def compile_grammar(self, kind: str, text: str) -> Any:
        build = self.compiler.compile_lark if kind == "lark" else self.compiler.compile_gbnf
        return self._compile(lambda: build(text))

    def _compile(self, build) -> Any:
        from constrained.grammar import GrammarError
        from grammars import GrammarSyntaxError, SchemaError

        try:
            return build()
        except SchemaError as exc:
            raise CompileFailure("unsupported", str(exc), exc.keyword) from exc
        except GrammarSyntaxError as exc:
            raise CompileFailure("unsupported", str(exc), exc.construct) from exc
        except GrammarError as exc:
            raise CompileFailure("unsupported", str(exc), "<automaton>") from exc
        except ValueError as exc:  # other clean refusals (bad schema documents ...)
            raise CompileFailure("unsupported", f"{type(exc).__name__}: {exc}", "<ValueError>") from exc
        except Exception as exc:
            raise CompileFailure("crash", f"{type(exc).__name__}: {exc}", f"<{type(exc).__name__}>") from exc

    def matcher(self, compiled: Any) -> Any:
        return compiled.matcher()

    def accept(self, matcher: Any, token_id: int) -> bool:
        return matcher.accept_token(token_id)

    def can_end(self, matcher: Any) -> bool:
        return matcher.can_terminate()

    def new_bitmask(self) -> Any:
        from constrained.bitmask import allocate_bitmask

        return allocate_bitmask(1, self.vocab_size)

    def fill(self, matcher: Any, bitmask: Any) -> None:
        matcher.fill_bitmask(bitmask, 0)

    def memory_bytes(self, compiled: Any) -> int | None:
        """Approximate bytes held by one cached grammar: cached masks, DFA tables and token index."""
        if hasattr(compiled, "memory_bytes"):
            value = compiled.memory_bytes
            return int(value() if callable(value) else value)
        seen: set[int] = set()
        total = 0

        def arrays(values) -> int:
            size = 0
            for value in values:
                if id(value) not in seen and hasattr(value, "nbytes"):
                    seen.add(id(value))
                    size += int(value.nbytes)
            return size

        index = getattr(compiled, "index", None)
        total += arrays(getattr(compiled, "_masks", {}).values())
        total += arrays(getattr(index, "_masks", {}).values())
        dfa = getattr(index, "dfa", None)
        if dfa is not None:  # ours (`LazyTokenIndex`): byte-level DFA tables
            total += arrays(getattr(dfa, name, None) for name in ("trans", "known", "final"))
        elif index is not None and hasattr(index, "get_transitions"):
            # outlines-core keeps state -> {token: next_state} maps: ~16 bytes per transition (two u32 in
            # a hash map at ~50% load), plus a small per-state overhead.
            total += sum(16 * len(t) + 64 for t in index.get_transitions().values())
        return total


class LLGuidanceAdapter(Adapter):
    name = "llguidance"
    grammar_kinds = ("lark", "gbnf")

    def __init__(self, tokenizer_name: str) -> None:
        super().__init__(tokenizer_name)
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        self.lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size, eos_token=self.eos)

    def compile(self, schema: Any) -> Any:
        return self._compile(lambda: self.llg.LLMatcher.grammar_from_json_schema(json.dumps(schema)))

    def compile_grammar(self, kind: str, text: str) -> Any:
        return self._compile(lambda: self.llg.grammar_from(kind, text))

    def _compile(self, grammar_of) -> Any:
        try:
            matcher = self.llg.LLMatcher(self.lltok, grammar_of(), log_level=0)
        except Exception as exc:
            raise CompileFailure("unsupported", f"{type(exc).__name__}: {exc}") from exc
        if matcher.is_error():
            message = matcher.get_error()
            found = re.search(
                r"Unimplemented keys: \[([^\]]*)\]|(\w+) constraints are not supported", message
            )
            keyword = (found.group(1) or found.group(2)).replace('"', "") if found else ""
            raise CompileFailure("unsupported", message, keyword)
        return matcher

    def matcher(self, compiled: Any) -> Any:
        return compiled.deep_copy()

    def accept(self, matcher: Any, token_id: int) -> bool:
        return matcher.consume_token(token_id)

    def can_end(self, matcher: Any) -> bool:
        return matcher.is_accepting()

    def fill(self, matcher: Any, bitmask: Any) -> None:
        row = bitmask[0]
        matcher.unsafe_compute_mask_ptr(row.ctypes.data, row.size * row.itemsize)


class XGrammarAdapter(Adapter):
    name = "xgrammar"
    grammar_kinds = ("ebnf", "gbnf")

    def __init__(self, tokenizer_name: str) -> None:
        super().__init__(tokenizer_name)
        import xgrammar

        self.xgr = xgrammar
        self.xinfo = xgrammar.TokenizerInfo.from_huggingface(
            self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=[self.eos]
        )
        self.compiler = xgrammar.GrammarCompiler(self.xinfo, max_threads=1, cache_enabled=False)

    def compile(self, schema: Any) -> Any:
        try:
            # strict_mode=False: no implicit `additionalProperties: false` (JSON Schema semantics).
            return self.compiler.compile_json_schema(json.dumps(schema), strict_mode=False)
        except Exception as exc:
            raise CompileFailure("unsupported", f"{type(exc).__name__}: {exc}") from exc

    def compile_grammar(self, kind: str, text: str) -> Any:
        try:  # XGrammar's EBNF is GBNF's dialect (`root ::= ...`)
            return self.compiler.compile_grammar(self.xgr.Grammar.from_ebnf(text, root_rule_name="root"))
        except Exception as exc:
            raise CompileFailure("unsupported", f"{type(exc).__name__}: {exc}") from exc

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def accept(self, matcher: Any, token_id: int) -> bool:
        return matcher.accept_token(token_id)

    def can_end(self, matcher: Any) -> bool:
        return matcher.accept_token(self.eos) and matcher.is_terminated()

    def new_bitmask(self) -> Any:
        return self.xgr.allocate_token_bitmask(1, self.vocab_size)

    def fill(self, matcher: Any, bitmask: Any) -> None:
        matcher.fill_next_token_bitmask(bitmask, 0)


class OutlinesAdapter(Adapter):
    """outlines-core's own JSON-schema -> regex compiler and `Guide` (the same token index as ours today)."""

    name = "outlines"

    def __init__(self, tokenizer_name: str) -> None:
        super().__init__(tokenizer_name)
        import outlines_core

        self.oc = outlines_core
        # the tokens a constraint may allow (as ours), with the lowest EOS id as outlines-core's EOS
        self.vocabulary = outlines_core.Vocabulary(min(self.info.eos_token_ids), self.info.tokens_by_bytes())

    def compile(self, schema: Any) -> Any:
        try:
            regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
            return self.oc.Index(regex, self.vocabulary)
        except Exception as exc:
            raise CompileFailure("unsupported", f"{type(exc).__name__}: {exc}") from exc

    def matcher(self, compiled: Any) -> Any:
        return [compiled, compiled.get_initial_state()]

    def accept(self, matcher: Any, token_id: int) -> bool:
        index, state = matcher
        if token_id == self.eos:
            return index.is_final_state(state)
        nxt = index.get_next_state(state, token_id)
        if nxt is None:
            return False
        matcher[1] = nxt
        return True

    def can_end(self, matcher: Any) -> bool:
        return matcher[0].is_final_state(matcher[1])

    def fill(self, matcher: Any, bitmask: Any) -> None:
        import numpy as np

        from constrained.bitmask import pack_token_ids

        index, state = matcher
        allowed = index.get_allowed_tokens(state) or []
        bitmask[0] = pack_token_ids(np.asarray(allowed, dtype=np.int64), self.vocab_size)


ADAPTERS = {a.name: a for a in (OursAdapter, LLGuidanceAdapter, XGrammarAdapter, OutlinesAdapter)}


# ---------------------------------------------------------------------------------------------- jobs
def check_job(adapter: Adapter, schema: Any, instances: list[tuple[list[int], bool]]) -> dict:
    """Compile (a JSON schema or a `GrammarText`), then walk every instance: `accepted[i]` = the engine took
    all its tokens and may end."""
    try:
        compiled = adapter.compile_source(schema)
    except CompileFailure as exc:
        return {"compile_error": exc.kind, "message": exc.message[:300], "keyword": exc.keyword}
    accepted = []
    for token_ids, _valid in instances:
        matcher = adapter.matcher(compiled)
        ok = all(adapter.accept(matcher, t) for t in token_ids) and adapter.can_end(matcher)
        accepted.append(bool(ok))
    return {"compile_error": None, "accepted": accepted}


def time_job(adapter: Adapter, schema: Any, instances: list[list[int]], memory: bool) -> dict:
    """TTFM (compile + matcher + first mask, cold cache) and the time of every later mask fill, in µs.
    `schema` is a JSON schema or a `GrammarText`."""
    clock = time.perf_counter_ns
    adapter.clear_cache()
    bitmask = adapter.new_bitmask()
    start = clock()
    try:
        compiled = adapter.compile_source(schema)
    except CompileFailure as exc:
        return {"compile_error": exc.kind, "message": exc.message[:300]}
    matcher = adapter.matcher(compiled)
    adapter.fill(matcher, bitmask)
    ttfm = (clock() - start) / 1000
    tbm: list[float] = []
    rejected = 0
    first = True
    for token_ids in instances:
        if not first:
            matcher = adapter.matcher(compiled)
        for position, token_id in enumerate(token_ids + [None]):
            if not first or position > 0:
                start = clock()
                adapter.fill(matcher, bitmask)
                tbm.append((clock() - start) / 1000)
            if token_id is not None and not adapter.accept(matcher, token_id):
                rejected += 1
                break
        first = False
    result = {"compile_error": None, "ttfm_us": ttfm, "tbm_us": tbm, "rejected": rejected}
    if memory:
        result["memory_bytes"] = adapter.memory_bytes(compiled)
    return result


def _worker_main(conn, engine: str, tokenizer_name: str) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import torch

        torch.set_num_threads(1)
        adapter = ADAPTERS[engine](tokenizer_name)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        kind, args = message
        try:
            result = check_job(adapter, *args) if kind == "check" else time_job(adapter, *args)
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class JobTimeout(Exception):
    pass


class EngineWorker:
    """One engine in its own process; a job that overruns its timeout kills (and restarts) the process."""

    def __init__(self, engine: str, tokenizer_name: str, start_timeout: float = 600.0) -> None:
        self.engine = engine
        self.tokenizer_name = tokenizer_name
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_worker_main, args=(child, self.engine, self.tokenizer_name), daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(self.start_timeout):
            self.close()
            raise RuntimeError(f"{self.engine}: worker did not start within {self.start_timeout:.0f} s")
        status, payload = parent.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(f"{self.engine}: worker failed to start:\n{payload}")

    def call(self, kind: str, args: tuple, timeout: float) -> dict:
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.restarts += 1
            self._start()
        self._conn.send((kind, args))
        if not self._conn.poll(timeout):
            self.close()
            raise JobTimeout(f"{self.engine}: job over {timeout} s")
        try:
            status, payload = self._conn.recv()
        except EOFError:  # the worker died (out of memory, abort in native code ...)
            code = self._proc.exitcode if self._proc else None
            self.close()
            return {
                "compile_error": "crash",
                "message": f"worker died (exit code {code})",
                "keyword": "<died>",
            }
        if status != "ok":
            return {"compile_error": "crash", "message": payload[-300:], "keyword": "<exception>"}
        return payload

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                try:
                    self._conn.send(None)
                except (OSError, BrokenPipeError):
                    pass
                self._proc.join(0.2)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = None
        self._conn = None
