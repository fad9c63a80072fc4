"""constrained: decode language models under grammars compiled from JSON schemas.

Modules: `tokenizer_info` (token bytes), `grammar` (compile -> Grammar -> Matcher), `bitmask` (token masks),
`sampling` (batched samplers), `detokenizer` (incremental text, stop strings), `engine` (decode loop),
`models` (loading), `serving` and `cli` (entry points).
"""
