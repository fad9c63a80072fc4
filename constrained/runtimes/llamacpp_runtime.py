"""A GGUF model run by llama.cpp (PyPI `llama-cpp-python`) as a `ModelRuntime`: quantized weights, one
llama.cpp context whose unified KV cache holds every row as its own sequence id.

Contract:
- `LlamaCppModel(path)` loads the weights once (memory-mapped, still quantized); `LlamaCppRuntime(model,
  max_sequences, context_window)` makes a context for up to `max_sequences` rows of up to `context_window`
  tokens each (`n_ctx = max_sequences * context_window` KV cells, allocated up front).
- Every `decode` is one `llama_decode` over the rows' new tokens (one each, more when forced); the logits
  of all rows are copied out in one NumPy view (`[rows, vocab]`, batch order). `prefill` feeds the prompts
  in batches of at most `n_batch` tokens and shares a prompt's KV cells between its copies
  (`llama_memory_seq_cp`, no recompute). The last `cached_prompts` prompts stay in the cache under spare
  sequence ids; a new prompt shares the cells of its longest common prefix with one of them and decodes
  only the rest (llama-server's prompt cache).
- A failed `llama_decode` (no free KV cells) raises `RuntimeError`; the rows of a failed prefill are removed.
- `available()` tells whether the package is installed; nothing here imports it before it is needed.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from functools import cache
from pathlib import Path

import numpy as np
import torch

_N_BATCH = 2048  # tokens per llama_decode call during prefill


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@cache
def _lib():
    import llama_cpp

    quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's own log, printed by the package's callback
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)
    return llama_cpp


class LlamaCppModel:
    """The weights of a GGUF file, loaded by llama.cpp."""

    def __init__(self, path: Path) -> None:
        lib = _lib()
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.path = path
        self._free = lib.llama_model_free  # kept: the module may be gone when __del__ runs at exit
        self.handle = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.handle:
            raise RuntimeError(f"llama.cpp could not load {path}")
        vocab = lib.llama_model_get_vocab(self.handle)
        self.vocab_size = int(lib.llama_vocab_n_tokens(vocab))
        self.context_window = int(lib.llama_model_n_ctx_train(self.handle))

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self._free(self.handle)
            self.handle = None


class LlamaCppRuntime:
    def __init__(
        self,
        model: LlamaCppModel,
        *,
        max_sequences: int = 32,
        context_window: int = 2048,
        threads: int | None = None,
        cached_prompts: int = 4,
    ) -> None:
        lib = _lib()
        self.model = model
        self.device = torch.device("cpu")
        self.vocab_size = model.vocab_size
        self.context_window = min(context_window, model.context_window)
        self.max_sequences = max_sequences
        params = lib.llama_context_default_params()
        params.n_ctx = self.context_window * (max_sequences + cached_prompts)
        params.n_batch = _N_BATCH
        params.n_ubatch = min(512, _N_BATCH)
        params.n_seq_max = max_sequences + cached_prompts
        params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
        params.kv_unified = True
        params.no_perf = True
        self._release = (lib.llama_batch_free, lib.llama_free)  # for __del__, even at interpreter exit
        self._ctx = lib.llama_init_from_model(model.handle, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self._memory = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(max(_N_BATCH, max_sequences), 0, 1)
        self._ids = max_sequences + cached_prompts
        self._free = list(range(self._ids - 1, -1, -1))  # sequence ids not in use (pop from the end)
        self._seq: list[int] = []  # per row: its sequence id
        self._pos: list[int] = []  # per row: tokens in its cache
        self._cached_prompts = cached_prompts
        self._prompts: list[tuple[int, list[int]]] = []  # recent prompts kept in the cache, oldest first

    @property
    def rows(self) -> int:
        return len(self._seq)

    def prefill(self, prompts: list[list[int]], copies: list[int]) -> torch.Tensor:
        if self.rows + sum(copies) > self.max_sequences:
            raise RuntimeError(f"more than {self.max_sequences} sequences")
        lib = _lib()
        seqs = [self._free.pop() for _ in prompts]
        entries = []
        for prompt, seq in zip(prompts, seqs, strict=True):
            start = self._reuse_prefix(prompt, seq)
            entries += [(prompt[pos], pos, seq, pos == len(prompt) - 1) for pos in range(start, len(prompt))]
        try:
            last = np.concatenate(
                [self._run(entries[start : start + _N_BATCH]) for start in range(0, len(entries), _N_BATCH)]
            )
        except Exception:
            for seq in seqs:
                lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
                self._free.append(seq)
            raise
        for prompt, seq, n in zip(prompts, seqs, copies, strict=True):
            clones = [self._free.pop() for _ in range(n - 1)]
            for clone in clones:
                lib.llama_memory_seq_cp(self._memory, seq, clone, -1, -1)
            self._seq.extend([seq, *clones])
            self._pos.extend([len(prompt)] * n)
            self._remember(prompt, seq)
        return torch.from_numpy(np.repeat(last, copies, axis=0))

    def _reuse_prefix(self, prompt: list[int], seq: int) -> int:
        """Share the KV cells of the longest prefix `prompt` has in common with a remembered prompt (chat
        templates start alike: system prompt, tool list); return how many tokens that covers. The last token
        is always decoded again: its logits are needed."""
        best, length = None, 0
        for cached, tokens in self._prompts:
            common = 0
            for a, b in zip(tokens, prompt[:-1], strict=False):
                if a != b:
                    break
                common += 1
            if common > length:
                best, length = cached, common
        if best is not None:
            _lib().llama_memory_seq_cp(self._memory, best, seq, 0, length)
        return length

    def _remember(self, prompt: list[int], seq: int) -> None:
        """Keep `prompt`'s cells under a spare sequence id (shared, not copied), forgetting the oldest."""
        if not self._cached_prompts:
            return
        lib = _lib()
        if len(self._prompts) == self._cached_prompts:
            oldest, _ = self._prompts.pop(0)
            lib.llama_memory_seq_rm(self._memory, oldest, -1, -1)
            self._free.append(oldest)
        keeper = self._free.pop(0)  # the far end of the free list: row ids are taken from the other end
        lib.llama_memory_seq_cp(self._memory, seq, keeper, 0, len(prompt))
        self._prompts.append((keeper, prompt))

    def decode(self, tokens: list[list[int]]) -> torch.Tensor:
        entries = [
            (token, pos + i, seq, i == len(row) - 1)
            for row, pos, seq in zip(tokens, self._pos, self._seq, strict=True)
            for i, token in enumerate(row)
        ]
        logits = self._run(entries)
        self._pos = [pos + len(row) for pos, row in zip(self._pos, tokens, strict=True)]
        return torch.from_numpy(logits)

    def keep(self, rows: list[int]) -> None:
        lib = _lib()
        kept = set(rows)
        for row, seq in enumerate(self._seq):
            if row not in kept:
                lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
                self._free.append(seq)
        self._seq = [self._seq[row] for row in rows]
        self._pos = [self._pos[row] for row in rows]

    def reset(self) -> None:
        """Drop every row; remembered prompts stay."""
        lib = _lib()
        for seq in self._seq:
            lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
            self._free.append(seq)
        self._seq, self._pos = [], []

    def _run(self, entries: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """One `llama_decode` of (token, position, sequence, wants logits) entries; the wanted logits."""
        lib = _lib()
        batch = self._batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, wants) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = wants
        status = lib.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(
                f"llama_decode failed ({status}): the KV cache is full or the batch is invalid"
            )
        outputs = sum(1 for entry in entries if entry[3])
        pointer = lib.llama_get_logits(self._ctx)
        view = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), (outputs, self.vocab_size)
        )
        return view.copy()

    def __del__(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._release[0](self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            self._release[1](self._ctx)
            self._ctx = None
