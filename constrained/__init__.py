"""constrained: decode language models under grammars compiled from JSON schemas.

Modules: `tokenizer_info` (token bytes), `token_index` (lazy byte automaton, token masks), `grammar`
(compile -> Grammar -> Matcher), `closing` (budget-aware closing), `bitmask` (token masks), `sampling`
(batched samplers), `detokenizer` (incremental text, stop strings), `engine` (decode loop), `models`
(loading), `api` (Python API), `hf` (transformers logits processors), `instances` (test-data generation),
`serving` and `cli` (entry points).

Heavy modules are imported on first use: `from constrained.api import Compiler`,
`from constrained.hf import JSONSchemaLogitsProcessor`.
"""
