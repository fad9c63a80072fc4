"""Model runtimes: what runs the forward passes for the engine's batch.

`base.ModelRuntime` is the contract; `torch_runtime.TorchRuntime` runs a Hugging Face causal LM (any
device); `llamacpp_runtime.LlamaCppRuntime` runs a GGUF model through llama.cpp with its weights quantized
(CPU; optional package `llama-cpp-python`). This package file imports nothing, so command lines can offer the
choice without loading torch.
"""

RUNTIMES: tuple[str, ...] = ("auto", "torch", "llama.cpp")  # "auto": llama.cpp for a .gguf when installed
