"""Shared fixtures: the embedded tokenizer, a seeded random-weight model (the adversary), a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from bench.adversary import random_model
from constrained.models import LoadedModel, embedded_gguf_path, load_model
from constrained.runtimes import llamacpp_runtime
from server.app import create_app
from server.serving import build_service

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
TEST_MODEL_ID = "random-smollm2"


@pytest.fixture(scope="session")
def embedded() -> LoadedModel:
    """The real embedded model (de-quantized once, then loaded from the cache)."""
    return load_model("embedded")


@pytest.fixture(scope="session")
def tokenizer(embedded):
    return embedded.tokenizer


@pytest.fixture(scope="session")
def adversary(tokenizer) -> LoadedModel:
    return LoadedModel(random_model(len(tokenizer)), tokenizer, TEST_MODEL_ID)


class LiveServer:
    def __init__(self, app, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def adversary_gguf(adversary, tmp_path_factory) -> LoadedModel:
    """The same random weights run by llama.cpp (skipped where llama-cpp-python is not installed)."""
    if not llamacpp_runtime.available():
        pytest.skip("llama-cpp-python is not installed")
    from tests.gguf_adversary import write_llama_gguf

    path = write_llama_gguf(
        adversary.model, embedded_gguf_path(), tmp_path_factory.mktemp("gguf") / "adv.gguf"
    )
    return LoadedModel(llamacpp_runtime.LlamaCppModel(path), adversary.tokenizer, TEST_MODEL_ID)


RUNTIME_PARAMS = ["torch", pytest.param("llama.cpp", marks=pytest.mark.llamacpp)]


@pytest.fixture(scope="session", params=RUNTIME_PARAMS)
def adversary_on(request) -> LoadedModel:
    """The adversary on each model runtime: tests using it run on torch and on llama.cpp."""
    return request.getfixturevalue("adversary" if request.param == "torch" else "adversary_gguf")


@pytest.fixture(scope="session")
def adversary_service(adversary_on):
    service = build_service(adversary_on, max_batch_size=16)
    yield service
    service.engine.shutdown()


@pytest.fixture(scope="session")
def live_server(adversary_service) -> Iterator[LiveServer]:
    """A real uvicorn server on 127.0.0.1 serving the random-weight model."""
    with LiveServer(create_app(adversary_service), free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def client(live_server):
    import openai

    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
