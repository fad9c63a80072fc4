"""The vLLM adapter: batch bookkeeping without vLLM; vLLM's interfaces and a served check when present."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from constrained.bitmask import allocate_bitmask, unpack_bitmask
from constrained.grammar import GrammarCompiler
from constrained.tokenizer_info import TokenizerInfo
from constrained.vllm_backend import (
    ConstrainedLogitsProcessor,
    ConstrainedStructuredOutputGrammar,
    ConstraintBatch,
    ConstraintSpec,
    spec_from_extra_args,
    xargs_for,
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def allowed(bitmask: torch.Tensor, row: int, vocab: int) -> set[int]:
    return set(torch.nonzero(unpack_bitmask(bitmask[row : row + 1], vocab)[0]).flatten().tolist())


# ------------------------------------------------------------------------------------------ vLLM-independent
def test_spec_from_extra_args():
    assert spec_from_extra_args(None) is None
    assert spec_from_extra_args({"other": 1}) is None
    spec = spec_from_extra_args({"constrained_schema": json.dumps(SCHEMA)})
    assert spec.kind == "json_schema" and json.loads(spec.source) == SCHEMA
    assert spec_from_extra_args({"constrained_json_object": "1"}).kind == "json_object"
    assert spec_from_extra_args({"constrained_regex": "[ab]+"}) == ConstraintSpec("regex", "[ab]+")
    with pytest.raises(ValueError, match="not valid JSON"):
        spec_from_extra_args({"constrained_schema": "{nope"})
    with pytest.raises(ValueError, match="at most one"):
        spec_from_extra_args({"constrained_schema": "{}", "constrained_regex": "a"})
    with pytest.raises(ValueError, match="JSON Schema"):
        spec_from_extra_args({"constrained_schema": "[1]"})


def test_spec_check_names_unsupported_keyword():
    spec = spec_from_extra_args({"constrained_schema": json.dumps({"type": "string", "format": "nope-x"})})
    try:
        spec.check()
    except ValueError as exc:  # an unknown format is either ignored or rejected by name
        assert "format" in str(exc)


def test_xargs_for_openai_shapes():
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    assert json.loads(xargs_for(response_format=rf)["constrained_schema"]) == SCHEMA
    assert xargs_for(response_format={"type": "json_object"}) == {"constrained_json_object": "1"}
    assert xargs_for(response_format={"type": "text"}) == {}
    tools = [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]
    xargs = xargs_for(tools=tools, tool_choice={"type": "function", "function": {"name": "f"}})
    spec = spec_from_extra_args(xargs)
    assert spec.kind == "tools" and spec.tool_choice == "f" and spec.parallel


def _two_orders() -> tuple[dict, dict]:
    """One object schema in two `properties` orders (all required, nothing else allowed)."""
    props = {"a": {"type": "integer"}, "b": {"type": "integer"}}
    ab = {"type": "object", "properties": props, "required": ["a", "b"], "additionalProperties": False}
    ba = {**ab, "properties": {"b": props["b"], "a": props["a"]}}
    return ab, ba


def test_cache_keeps_property_order(tokenizer):
    """Schemas differing only in property order get their own grammars: each follows its own order."""
    compiler = GrammarCompiler(TokenizerInfo.from_huggingface(tokenizer))
    ab, ba = _two_orders()
    g_ab, g_ba = compiler.compile_json_schema(ab), compiler.compile_json_schema(ba)
    a_first, b_first = encode(tokenizer, '{"a":2,"b":1}'), encode(tokenizer, '{"b":1,"a":2}')
    assert g_ab.matcher().accept_tokens(a_first) and not g_ab.matcher().accept_tokens(b_first)
    assert g_ba.matcher().accept_tokens(b_first) and not g_ba.matcher().accept_tokens(a_first)


def test_vllm_spec_keeps_property_order(compiler, tokenizer):
    """The vLLM adapter passes the schema's key order through to the compiled grammar."""
    _, ba = _two_orders()
    spec = spec_from_extra_args({"constrained_schema": json.dumps(ba)})
    assert list(json.loads(spec.source)["properties"]) == ["b", "a"]
    grammar = spec.compile(compiler)
    assert grammar.matcher().accept_tokens(encode(tokenizer, '{"b":1,"a":2}'))
    assert not grammar.matcher().accept_tokens(encode(tokenizer, '{"a":2,"b":1}'))


def test_batch_by_request_id(compiler, tokenizer):
    """Two constrained requests and an unconstrained row, keyed by request id; rows follow the key order."""
    info = compiler.info
    grammar = compiler.compile_json_schema(SCHEMA)
    regex = compiler.compile_regex("(yes|no)")
    batch = ConstraintBatch(info.vocab_size)
    out_a: list[int] = []
    batch.add("req-a", grammar, out_a)
    batch.add("req-b", regex)
    bitmask = allocate_bitmask(3, info.vocab_size)
    rows = batch.fill_bitmask(bitmask, ["req-b", None, "req-a"])
    assert rows == [0, 2]
    assert bitmask[1].eq(-1).all()  # unconstrained row stays all-allowed
    first_a = allowed(bitmask, 2, info.vocab_size)
    assert first_a and all(info.token_bytes[t].lstrip().startswith(b"{") for t in first_a)
    assert all(
        b"yes".startswith(info.token_bytes[t]) or b"no".startswith(info.token_bytes[t])
        for t in allowed(bitmask, 0, info.vocab_size)
    )

    # the live output list grows: sync accepts the new tokens
    text = '{"name": "Ada", "age": 36}'
    out_a.extend(encode(tokenizer, text))
    batch.sync()
    assert batch.can_terminate("req-a") and not batch.is_terminated("req-a")
    batch.fill_bitmask(bitmask, ["req-b", None, "req-a"])
    assert allowed(bitmask, 2, info.vocab_size) == set(info.eos_token_ids)

    # EOS terminates; a shorter list (preemption / rejected tokens) rolls back
    eos = min(info.eos_token_ids)
    out_a.append(eos)
    batch.sync()
    assert batch.is_terminated("req-a")
    del out_a[-3:]
    batch.sync()
    assert not batch.is_terminated("req-a") and not batch.can_terminate("req-a")
    batch.rollback("req-a", 1)
    assert batch.requests["req-a"].consumed == len(out_a) - 1

    # explicit tokens for a request without a live list
    assert batch.accept_token("req-b", encode(tokenizer, "yes")[0])
    batch.remove("req-b")
    assert "req-b" not in batch and len(batch) == 1


def test_refused_token_leaves_only_eos(compiler, tokenizer):
    info = compiler.info
    batch = ConstraintBatch(info.vocab_size)
    batch.add(0, compiler.compile_regex("[0-9]+"), encode(tokenizer, "x"))
    assert batch.is_terminated(0)
    bitmask = allocate_bitmask(1, info.vocab_size)
    batch.fill_bitmask(bitmask, [0])
    assert allowed(bitmask, 0, info.vocab_size) == set(info.eos_token_ids)


def test_apply_masks_only_constrained_rows_and_moves(compiler, tokenizer):
    info = compiler.info
    batch = ConstraintBatch(info.vocab_size)
    batch.add(2, compiler.compile_regex("(yes|no)"))
    batch.swap(2, 0)  # the request now lives at row 0
    assert 0 in batch and 2 not in batch
    logits = torch.zeros(3, info.vocab_size)
    batch.apply(logits, {row: row for row in range(3)})
    assert torch.isfinite(logits[1:]).all()
    finite = set(torch.nonzero(torch.isfinite(logits[0])).flatten().tolist())
    assert encode(tokenizer, "yes")[0] in finite and len(finite) < 10
    batch.move(0, 1)
    assert list(batch.requests) == [1]


def test_tools_spec_compiles(compiler, tokenizer):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}]
    spec = spec_from_extra_args(xargs_for(tools=tools, tool_choice="required"))
    spec.check()
    matcher = spec.compile(compiler).matcher()
    # arguments follow the schema's `properties` order
    call = '<tool_call>\n{"name": "lookup", "arguments": {"name": "Ada", "age": 3}}\n</tool_call>'
    assert matcher.accept_tokens(encode(tokenizer, call)) and matcher.can_terminate()


def test_tools_spec_goes_through_the_constraint_layer(compiler, tokenizer):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}]
    none = spec_from_extra_args(xargs_for(tools=tools, tool_choice="none"))
    none.check()
    assert none.compile(compiler) is None  # tool_choice "none": the output stays free
    auto = spec_from_extra_args(xargs_for(tools=tools)).compile(compiler).matcher()
    assert auto.accept_tokens(encode(tokenizer, "Hello")) and auto.can_terminate()
    bad = [
        ({"constrained_tools": json.dumps([{"type": "retrieval"}])}, r"tools\[0\]"),
        ({"constrained_tools": json.dumps(tools), "constrained_tool_choice": "nope"}, "not among the tools"),
        ({"constrained_schema": json.dumps({"type": "strin"})}, "invalid JSON schema"),
    ]
    for xargs, message in bad:
        with pytest.raises(ValueError, match=message):
            ConstrainedLogitsProcessor.validate_params(
                SimpleNamespace(extra_args=xargs, structured_outputs=None)
            )


def _batch_update(removed=(), added=(), moved=()):
    return SimpleNamespace(batch_size=4, removed=list(removed), added=list(added), moved=list(moved))


def test_logits_processor_bookkeeping(compiler, tokenizer, monkeypatch):
    """The processor's update_state/apply with vLLM-shaped batch updates (vLLM itself not needed)."""
    import constrained.vllm_backend as vb

    monkeypatch.setattr(vb, "_compiler_for", lambda config: compiler)
    if vb.MoveDirectionality is None:
        monkeypatch.setattr(vb, "MoveDirectionality", SimpleNamespace(SWAP="swap", UNIDIRECTIONAL="uni"))
    swap = vb.MoveDirectionality.SWAP
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: compiler.info.vocab_size))
    proc = ConstrainedLogitsProcessor(config, torch.device("cpu"), False)
    assert proc.is_argmax_invariant() is False
    params = SimpleNamespace(extra_args={"constrained_regex": "(yes|no)"}, structured_outputs=None)
    plain = SimpleNamespace(extra_args=None, structured_outputs=None)
    ConstrainedLogitsProcessor.validate_params(params)
    out: list[int] = []
    proc.update_state(_batch_update(added=[(0, plain, [], []), (1, params, [], out)]))
    proc.update_state(_batch_update(moved=[(0, 1, swap)]))
    logits = proc.apply(torch.zeros(2, compiler.info.vocab_size))
    assert torch.isfinite(logits[1]).all() and not torch.isfinite(logits[0]).all()
    out.extend(encode(tokenizer, "yes"))
    proc.update_state(None)
    logits = proc.apply(torch.zeros(2, compiler.info.vocab_size))
    finite = set(torch.nonzero(torch.isfinite(logits[0])).flatten().tolist())
    assert finite == set(compiler.info.eos_token_ids)
    proc.update_state(_batch_update(removed=[0]))
    assert torch.isfinite(proc.apply(torch.zeros(2, compiler.info.vocab_size))).all()
    with pytest.raises(ValueError):
        ConstrainedLogitsProcessor.validate_params(
            SimpleNamespace(extra_args={"constrained_schema": "{bad"}, structured_outputs=None)
        )


# ------------------------------------------------------------------------------------------ vLLM's interfaces
def test_vllm_interfaces(compiler, tokenizer):
    pytest.importorskip("vllm")
    from vllm.v1.sample.logits_processor import LogitsProcessor
    from vllm.v1.structured_output.backend_types import StructuredOutputGrammar
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor

    from constrained.vllm_backend import ConstrainedLogitsProcessorV2

    assert issubclass(ConstrainedLogitsProcessor, LogitsProcessor)
    assert issubclass(ConstrainedLogitsProcessorV2, V2LogitsProcessor)
    assert issubclass(ConstrainedStructuredOutputGrammar, StructuredOutputGrammar)
    sog = ConstrainedStructuredOutputGrammar(compiler.compile_regex("(yes|no)"))
    ids = encode(tokenizer, "yes")
    assert sog.validate_tokens(ids + ids) == ids and sog.num_processed_tokens == 0
    assert sog.accept_tokens("r", ids) and not sog.is_terminated()
    assert sog.accept_tokens("r", [min(compiler.info.eos_token_ids)]) and sog.is_terminated()
    sog.rollback(1)
    bitmask = allocate_bitmask(2, compiler.info.vocab_size)
    sog.fill_bitmask(bitmask, 1)
    assert allowed(bitmask, 1, compiler.info.vocab_size) == set(compiler.info.eos_token_ids)
    sog.reset()
    assert sog.num_processed_tokens == 0 and not sog.matcher.can_terminate()


# ------------------------------------------------------------------------------------------ served by vLLM
VLLM_PYTHON = os.environ.get("CONSTRAINED_VLLM_PYTHON")  # a venv with vLLM, when not this one


@pytest.mark.slow
def test_served_by_vllm(embedded, tmp_path):
    """`vllm serve` the embedded model with our processor; the OpenAI SDK gets schema-valid JSON."""
    python = VLLM_PYTHON or sys.executable
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("vLLM is not installed (set CONSTRAINED_VLLM_PYTHON to a venv that has it)")
    import jsonschema
    from openai import OpenAI

    from constrained.models import _gguf_cache_path, embedded_gguf_path
    from tests.conftest import free_port

    model_dir = _gguf_cache_path(embedded_gguf_path())
    port = free_port()
    v2 = os.environ.get("VLLM_USE_V2_MODEL_RUNNER") == "1"
    processor = "ConstrainedLogitsProcessorV2" if v2 else "ConstrainedLogitsProcessor"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "smollm2",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        "8",
        "--enforce-eager",
        "--logits-processors",
        "constrained.vllm_backend:" + processor,
    ]
    log = open(tmp_path / "vllm.log", "wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        deadline = time.time() + 600
        while True:
            if server.poll() is not None:
                pytest.fail("vLLM exited:\n" + (tmp_path / "vllm.log").read_text()[-4000:])
            try:
                client.models.list()
                break
            except Exception:
                if time.time() > deadline:
                    pytest.fail("vLLM did not start:\n" + (tmp_path / "vllm.log").read_text()[-4000:])
                time.sleep(2)
        rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
        for seed in range(3):
            done = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Describe a person as JSON."}],
                max_tokens=80,
                temperature=1.0,
                seed=seed,
                extra_body={"vllm_xargs": xargs_for(response_format=rf)},
            )
            choice = done.choices[0]
            if choice.finish_reason == "stop":
                jsonschema.validate(json.loads(choice.message.content), SCHEMA)
            else:
                assert choice.finish_reason == "length"
        with pytest.raises(Exception, match="400|not valid JSON"):
            client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "x"}],
                max_tokens=5,
                extra_body={"vllm_xargs": {"constrained_schema": "{bad"}},
            )
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_forced_tokens_exposed_for_jump_forward(compiler, tokenizer):
    """After `{"`, the property name is forced: the plug-in's grammars give its canonical tokens."""
    grammar = ConstrainedStructuredOutputGrammar(compiler.compile_json_schema(SCHEMA))
    assert grammar.accept_tokens("r", encode(tokenizer, '{"'))
    forced = grammar.forced_tokens(tokenizer)
    assert forced == encode(tokenizer, 'name":')[:-1] and forced
    assert grammar.accept_tokens("r", forced)
