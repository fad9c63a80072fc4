"""Model-sampled instances, for realistic values.

Contract: `generate_with_model(schema, n, ...)` samples with `constrained.engine.Engine` under the schema's
compiled grammar: one request with `n` seeded choices (batched up to 32). Choices cut by `max_tokens` are
completed by the engine's budget closing, so each is a full instance; each is checked with
`make_validator(schema)` (`Instance.valid`; a text that does not parse gives `Instance(None, "", text,
False)`). A failed request raises `GenerationError`. The engine and model are imported on call, so this
module is cheap to import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from constrained.instances.common import GenerationError, Instance, compact_json, make_validator

if TYPE_CHECKING:
    from constrained.models import LoadedModel


def generate_with_model(
    schema: Mapping[str, Any] | bool,
    n: int,
    *,
    model: str = "embedded",
    seed: int = 0,
    max_tokens: int = 512,
    temperature: float = 1.0,
    loaded: LoadedModel | None = None,
) -> list[Instance]:
    """`n` instances sampled by a model under the schema's grammar (one request, `n` seeded choices).

    Choices that end by length are completed by the engine's budget closing, so each is a full instance.
    `loaded` (a `constrained.models.LoadedModel`) skips loading `model`."""
    import queue

    from constrained.api import Compiler
    from constrained.engine import ChoiceDelta, Engine, GenerationRequest, RequestFailed, RequestFinished
    from constrained.models import load_model
    from constrained.sampling import SamplingParams

    loaded = loaded or load_model(model)
    tokenizer = loaded.tokenizer
    grammar = Compiler.for_tokenizer(tokenizer, vocab_size=loaded.vocab_size).json_schema(schema)
    messages = [
        {"role": "system", "content": "You produce realistic example JSON data. Answer with JSON only."},
        {
            "role": "user",
            "content": "Give one realistic JSON instance of this JSON schema:\n" + json.dumps(schema),
        },
    ]
    try:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # no chat template: plain prompt
        prompt = messages[0]["content"] + "\n" + messages[1]["content"] + "\n"
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    batch = max(1, min(n, 32))
    engine = Engine(loaded.runtime(batch), tokenizer, max_batch_size=batch)
    events: queue.Queue = queue.Queue()
    try:
        request = GenerationRequest(
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            params=SamplingParams(temperature=temperature, seed=seed),
            n=n,
            grammar=grammar,
        )
        engine.submit(request, events.put)
        texts = [""] * n
        while True:
            event = events.get(timeout=600)
            if isinstance(event, ChoiceDelta):
                texts[event.index] += event.text
            elif isinstance(event, RequestFailed):
                raise GenerationError(event.message)
            elif isinstance(event, RequestFinished):
                break
    finally:
        engine.shutdown()
    validator = make_validator(schema)
    out = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            out.append(Instance(None, "", text, False))
            continue
        out.append(Instance(value, compact_json(value), text, validator.is_valid(value)))
    return out
