"""Fast-forward: the tokens a constraint forces, appended without sampling.

Contract: `forced_tokens(matcher, tokenizer, limit)` returns token ids the output must continue with from
the matcher's state, never more than `limit`. They are the tokenizer's own (canonical) tokenization of the
grammar's forced bytes (`Matcher.forced_bytes`), cut to whole characters, minus the last token — which the
text that follows could merge into a longer token — and only when every token is allowed in turn. An empty
list means "sample as usual". The matcher is left unchanged.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from constrained.grammar import Matcher


def forced_tokens(matcher: Matcher, tokenizer: PreTrainedTokenizerBase, limit: int) -> list[int]:
    if limit <= 0:
        return []
    data = matcher.forced_bytes()
    text = data.decode("utf-8", errors="ignore")  # a character cut at the end is left to the sampler
    if not text:
        return []
    ids = tokenizer.encode(text, add_special_tokens=False)[:-1][:limit]
    grammar = matcher.grammar
    state = matcher.state
    for token in ids:
        state = grammar.next_state(state, token)
        if state is None:
            return []
    return ids
