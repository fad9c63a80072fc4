"""constrained: decode language models under grammars compiled from JSON schemas.

Modules: `tokenizer_info` (token bytes), `token_index` (lazy byte automaton, token masks), `grammar`
(compile -> Grammar -> Matcher), `constraints` (constraint specs -> grammars), `tool_calls` (tool-call
format), `compile_pool` and `disk_cache` (schema compiles in workers, on disk), `closing` (budget-aware
closing), `fast_forward` (forced tokens), `reasoning` (think first), `bitmask` (token masks), `sampling`
(batched samplers), `detokenizer` (incremental text, stop strings), `engine` (decode loop), `runtimes` and
`models` (forward passes, loading), `api` (Python API), `hf` (transformers logits processors),
`vllm_backend` (vLLM logits processor), `vllm_xargs` (its request arguments), `vllm_structured_output`
(vLLM's `StructuredOutputGrammar` shape), `instances` (test-data generation), `cli` (command line). Nothing
here imports the `server` package (see ARCHITECTURE.md).

Heavy modules are imported on first use: `from constrained.api import Compiler`,
`from constrained.hf import JSONSchemaLogitsProcessor`.
"""
