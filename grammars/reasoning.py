"""Think, then answer: a grammar whose outputs are a free reasoning block followed by a constrained answer.

Contract: `think_then(answer, open_tag, close_tag)` is the `RuleGrammar` of
``[open_tag] T close_tag W A`` where T is any text not containing `close_tag`, W at most three newlines or
spaces, and A a word of `answer`. The opening tag is optional (chat templates often put it in the prompt).
`close_tag` must not repeat a character (true of `</think>` and the tags reasoning models use): then "text
without the tag" is a small regular language, written here from the tag's matching automaton.
"""

from __future__ import annotations

import dataclasses

from grammars.ir import RuleGrammar
from grammars.regex import cps_class, cps_complement, cps_norm, lit

DEFAULT_OPEN_TAG = "<think>"
DEFAULT_CLOSE_TAG = "</think>"


def _other_than(*chars: str) -> str:
    """A class of every character except `chars` (surrogates excluded)."""
    excluded = cps_norm([(ord(c), ord(c)) for c in chars] + [(0xD800, 0xDFFF)])
    return cps_class(cps_complement(excluded))


def text_without(tag: str) -> str:
    """Regex of the strings in which `tag` does not occur (`tag`: at least 2 distinct characters)."""
    if len(tag) < 2 or len(set(tag)) != len(tag):
        raise ValueError(f"the closing tag must have 2+ characters, none repeated: {tag!r}")
    first = tag[0]
    # after reading tag[:k] (k >= 1): tag[k] goes on, `first` restarts at k = 1, anything else is a way out
    partial = [lit(tag[1:k]) for k in range(1, len(tag))]  # what follows `first` to reach k = 1..n-1
    restart = "(?:" + "|".join(partial) + ")" + lit(first)
    leave = "(?:" + "|".join(p + _other_than(tag[k], first) for k, p in enumerate(partial, start=1)) + ")"
    at_end = "(?:" + "|".join(partial) + ")"
    opened = lit(first) + f"(?:{restart})*"
    return f"(?:{_other_than(first)}|{opened}{leave})*(?:{opened}{at_end})?"


def think_then(
    answer: RuleGrammar, open_tag: str = DEFAULT_OPEN_TAG, close_tag: str = DEFAULT_CLOSE_TAG
) -> RuleGrammar:
    prefix = f"(?:{lit(open_tag)})?{text_without(close_tag)}{lit(close_tag)}[\\n ]{{0,3}}"
    return dataclasses.replace(answer, root=prefix + f"(?:{answer.root})")
