"""Lazy token index: per-state allowed-token masks computed on first visit (outlines-core `Index` semantics).

- `TokenIndex` (and `ByteAutomaton`): the protocol a token index satisfies for `constrained.grammar.Grammar`.
- `TokenVocabulary.from_info(info)`: byte trie of a tokenizer's constrainable tokens (built once).
- `LazyTokenIndex(regex, vocab)`: cheap to build (parse only); DFA rows and masks are built on demand.
"""

from constrained.token_index.automaton import LazyDFA, RegexUnsupported
from constrained.token_index.index import LazyTokenIndex
from constrained.token_index.protocol import ByteAutomaton, TokenIndex
from constrained.token_index.vocabulary import TokenVocabulary

__all__ = ["ByteAutomaton", "LazyDFA", "LazyTokenIndex", "RegexUnsupported", "TokenIndex", "TokenVocabulary"]
