"""The constraint IR: a rule graph whose rule bodies are regex fragments that may call other rules.

Contract: a :class:`RuleGrammar` is ``root`` (a regex fragment) plus ``rules``; ``(?&N)`` inside a fragment
(PCRE's syntax for calling a subpattern) stands for the language of ``rules[N]``, ``(?&N&M...)`` for the
intersection of those rules' languages (strings matching all of them) and ``(?&N&~M)`` for the strings of
``N`` that ``M`` does not match (a complement operand; an intersection needs one plain operand). Operands of
intersections and complements must not be recursive. A
rule is written once and called by id wherever it is used, so a grammar's size is linear in its schema's
size. Rules in ``recursive`` call themselves (directly or through others): the token automaton expands them
through a stack (continuations), bounded by ``stack_limit`` open recursive calls at any point of an output.
Rules in ``productive`` are recursive rules the compiler knows to match some finite string (the
any-JSON-value rule, whose ``null`` ends it): the token index need not check them. Rules in
``open_content`` are JSON-string content every content string is a prefix of (any key but a few declared
names): a promise of the compiler that lets the token index allow every content token where such a rule is
being matched, without exploring it.

Fragments use the regex syntax of :mod:`grammars.regex`; ``(?&`` never appears in that syntax otherwise (a
literal ``(`` is always escaped, ``&`` is escaped inside classes). :meth:`RuleGrammar.to_regex` exports a
plain regex (inlined calls) when the grammar has neither recursion nor intersections: for Python ``re``
checks, outlines-core and vLLM's regex interop.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

# An escaped character (skipped) or a rule call.
_CALL = re.compile(r"\\.|\(\?&([0-9]+(?:&~?[0-9]+)*)\)", re.DOTALL)
DEFAULT_STACK_LIMIT = 128
NOTHING = r"[^\s\S]"  # the empty language


def call(rule: int) -> str:
    """The fragment that calls ``rule``."""
    return f"(?&{rule})"


def intersection(rules: list[int], excluded: list[int] = ()) -> str:
    """The fragment of the strings that match every rule of ``rules`` and none of ``excluded``
    (non-recursive rules; ``rules`` not empty)."""
    return "(?&" + "&".join([*map(str, rules), *(f"~{r}" for r in excluded)]) + ")"


def _operands(match: re.Match) -> tuple[list[int], list[int]]:
    """The plain and the complemented operands of a call or intersection."""
    plain, negated = [], []
    for x in match.group(1).split("&"):
        (negated if x.startswith("~") else plain).append(int(x.lstrip("~")))
    return plain, negated


def _ids(match: re.Match) -> list[int]:
    plain, negated = _operands(match)
    return plain + negated


def is_call(fragment: str) -> bool:
    """Whether ``fragment`` is exactly one rule call."""
    return fragment.startswith("(?&") and fragment.endswith(")") and fragment[3:-1].isdigit()


def calls_in(fragment: str) -> list[int]:
    """Ids of the rules ``fragment`` calls, in order of appearance."""
    return [rule for m in _CALL.finditer(fragment) if m.group(1) is not None for rule in _ids(m)]


def renumber(fragment: str, offset: int) -> str:
    """``fragment`` with every call ``(?&N)`` rewritten to ``(?&N+offset)``."""
    if not offset or "(?&" not in fragment:
        return fragment

    def shifted(m: re.Match) -> str:
        plain, negated = _operands(m)
        return intersection([r + offset for r in plain], [r + offset for r in negated])

    return _CALL.sub(lambda m: m.group(0) if m.group(1) is None else shifted(m), fragment)


@dataclass(frozen=True)
class RuleGrammar:
    """A regex fragment over rules (see the module docstring). Immutable; hashable."""

    root: str
    rules: tuple[str, ...] = ()
    recursive: frozenset[int] = frozenset()
    stack_limit: int = DEFAULT_STACK_LIMIT
    open_content: frozenset[int] = frozenset()
    productive: frozenset[int] = frozenset()

    @classmethod
    def of_regex(cls, regex: str) -> RuleGrammar:
        """A plain regex as a grammar without rules."""
        return cls(regex)

    @property
    def size(self) -> int:
        """Characters of all fragments: the budgeted size of the grammar."""
        return len(self.root) + sum(map(len, self.rules))

    def to_regex(self, unroll: int | None = None) -> str:
        """A plain regex of the same language. A recursive grammar needs ``unroll``: recursive calls nest at
        most that deep in the export (deeper ones match nothing); without it, ``ValueError``."""
        if self.recursive and unroll is None:
            raise ValueError("a recursive grammar has no regex form (give `unroll`)")
        done: dict[tuple[int, int], str] = {}

        def inline(fragment: str, left: int) -> str:
            if "(?&" not in fragment:
                return fragment
            return _CALL.sub(lambda m: m.group(0) if m.group(1) is None else expand(m, left), fragment)

        def expand(m: re.Match, left: int) -> str:
            rules, negated = _operands(m)
            if len(rules) > 1 or negated:
                raise ValueError("an intersection or complement has no regex form")
            (rule,) = rules
            if rule in self.recursive:
                if left == 0:
                    return NOTHING
                left -= 1
            if (rule, left) not in done:
                done[rule, left] = f"(?:{inline(self.rules[rule], left)})"
            return done[rule, left]

        return inline(self.root, unroll or 0)


class LazyGrammar:
    """A rule grammar some of whose rules are compiled on first use (the JSON-Schema walk's deferred
    sub-schemas, `grammars.deferral`).

    Contract: the attributes are those of `RuleGrammar`, but live: `rules` is a list and the rule sets are
    sets that grow as pending rules are compiled. `pending` holds the ids whose body is not written yet (a
    placeholder is in `rules`); `force(rule)` writes it (thread-safe; a no-op for other rules), which may add
    rules, pending ones included. A pending rule's language is never empty and compiling it never refuses
    (the compiler only defers such sub-schemas), so a reader that needs only some rules (the token
    automaton) forces just those. `complete()` forces all and returns the equivalent `RuleGrammar`; a
    pickled `LazyGrammar` is its `RuleGrammar`.
    """

    def __init__(
        self,
        root: str,
        rules: list[str],
        recursive: set[int],
        stack_limit: int,
        open_content: set[int],
        productive: set[int],
        pending: Collection[int],
        write: Callable[[int], None],
    ) -> None:
        self.root = root
        self.rules = rules
        self.recursive = recursive
        self.stack_limit = stack_limit
        self.open_content = open_content
        self.productive = productive
        self.pending = pending
        self._write = write  # compiles a pending rule into `rules` (and drops it from `pending`)
        self._lock = threading.RLock()
        self._complete: RuleGrammar | None = None

    def force(self, rule: int) -> None:
        """Compile `rule` now if it is pending."""
        if rule in self.pending:
            with self._lock:
                if rule in self.pending:
                    self._write(rule)

    def complete(self) -> RuleGrammar:
        """Every pending rule compiled; the grammar as an immutable `RuleGrammar`."""
        with self._lock:
            while self.pending:
                self._write(next(iter(self.pending)))
            if self._complete is None:
                self._complete = RuleGrammar(
                    self.root,
                    tuple(self.rules),
                    frozenset(self.recursive),
                    self.stack_limit,
                    frozenset(self.open_content),
                    frozenset(self.productive),
                )
            return self._complete

    def __reduce__(self):
        complete = self.complete()
        return RuleGrammar, (
            complete.root,
            complete.rules,
            complete.recursive,
            complete.stack_limit,
            complete.open_content,
            complete.productive,
        )


def complete(grammar: RuleGrammar | LazyGrammar) -> RuleGrammar:
    """`grammar` with every rule written (see `LazyGrammar.complete`)."""
    return grammar.complete() if isinstance(grammar, LazyGrammar) else grammar


@dataclass
class GrammarBuilder:
    """Assembles one grammar from fragments and embedded grammars (their rules renumbered)."""

    rules: list[str] = field(default_factory=list)
    recursive: set[int] = field(default_factory=set)
    stack_limit: int = DEFAULT_STACK_LIMIT
    open_content: set[int] = field(default_factory=set)
    productive: set[int] = field(default_factory=set)

    def embed(self, grammar: RuleGrammar | LazyGrammar) -> str:
        """Append ``grammar``'s rules; returns its root fragment, to use inside this grammar."""
        grammar = complete(grammar)
        offset = len(self.rules)
        self.rules.extend(renumber(body, offset) for body in grammar.rules)
        self.recursive.update(r + offset for r in grammar.recursive)
        self.open_content.update(r + offset for r in grammar.open_content)
        self.productive.update(r + offset for r in grammar.productive)
        self.stack_limit = min(self.stack_limit, grammar.stack_limit)
        return renumber(grammar.root, offset)

    def build(self, root: str) -> RuleGrammar:
        return RuleGrammar(
            root,
            tuple(self.rules),
            frozenset(self.recursive),
            self.stack_limit,
            frozenset(self.open_content),
            frozenset(self.productive),
        )
