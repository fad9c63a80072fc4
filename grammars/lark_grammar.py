"""Lark grammars (the syntax of vLLM's ``structured_outputs.grammar`` and llguidance) compiled to the IR.

Contract: :func:`compile_lark` returns the :class:`grammars.ir.RuleGrammar` of the strings the grammar's
``start`` rule derives, where each terminal stands for every string its pattern fully matches (the
grammar's context-free language, as Lark's Earley parser with ``lexer="dynamic_complete"`` reads it).
The text is parsed by ``lark`` itself (rules, terminals as ``"strings"i`` or ``/regex/flags``, ``|``, ``?``,
``*``, ``+``, ``[...]``, ``~ n`` / ``~ n..m``, templates, aliases, priorities, ``%import`` of Lark's bundled
grammars such as ``common``, ``%override``, ``%extend``). Terminals become IR fragments through
:mod:`grammars.pyregex` (exact, flags included); rules become IR rules (:mod:`grammars.cfg`: immediate left
recursion rewritten, other left recursion rejected); ``%ignore`` terminals may appear any number of times
before, between and after tokens (never inside one), as Lark's lexers skip them.

Rejected with :class:`GrammarSyntaxError` (``construct`` says which): Lark syntax errors; imports from files
(relative imports; only Lark's bundled grammars); ``%declare``d terminals (they come from a post-lexer);
regex constructs that :mod:`grammars.pyregex` rejects (lookaround, lazy quantifiers, anchors, ...) — except
``common.ESCAPED_STRING``, whose lexer meaning ("a double-quoted string whose quotes inside are escaped") is
exactly ``"(?:[^"\\\\\\n]|\\\\[^\\n])*"`` and is compiled as that; left recursion other than immediate.
Priorities and tree-shaping marks (``?rule``, ``!rule``, ``_rule``, ``-> alias``) do not change the language
and are ignored. Lexer commitments (longest match, priorities of a standard/contextual lexer) are not
modelled: for grammars whose adjacent terminals overlap, a committing lexer may split a string differently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from .cfg import EMPTY, Cfg, Expr, Frag, Ref, Rep, alternatives, lower, refs, sequence
from .errors import GrammarSyntaxError
from .ir import RuleGrammar
from .json_schema import CompiledSchema
from .pyregex import translate

IGNORE = "%ignore"  # the rule of the ignored terminals (a name no Lark symbol can have)
ESCAPED_STRING = r'"(?:[^"\\\n]|\\[^\n])*"'


def compile_lark(text: str, start: str = "start") -> RuleGrammar:
    """The IR grammar of the Lark grammar ``text`` from rule ``start`` (see the module docstring)."""
    return translate_lark(text, start).grammar


def translate_lark(text: str, start: str = "start") -> CompiledSchema:
    """:func:`compile_lark` with one explain entry per rule and terminal kept."""
    try:
        return lower(lark_cfg(text, start))
    except RecursionError:
        raise GrammarSyntaxError("the grammar nests too deep to compile", "nesting") from None


def lark_cfg(text: str, start: str = "start") -> Cfg:
    """The context-free grammar of ``text``: rules, terminals as rules, ``%ignore`` as a rule."""
    grammar = _load(text)
    terminals = _terminal_patterns(grammar)
    rules = _rule_trees(grammar, terminals)
    if start not in rules:
        raise GrammarSyntaxError(f"the start rule '{start}' is not defined", "start")
    cfg = Cfg({name: _expr(tree, name) for name, tree in rules.items()}, Ref(start))
    ignored = list(dict.fromkeys(grammar.ignore))
    skip = Rep(Ref(IGNORE), 0, None) if ignored else EMPTY
    if ignored:
        cfg.root = sequence([skip, Ref(start)])
        cfg.rules[IGNORE] = alternatives(Ref(f"%raw {name}") for name in ignored)
        cfg.labels[IGNORE] = "%ignore"
        cfg.notes[IGNORE] = [f"between tokens: {', '.join(ignored)}"]
    for name in dict.fromkeys(_used_terminals(cfg.rules, start, terminals) + ignored):
        pattern = terminals[name]
        frag = _terminal_frag(name, pattern)
        cfg.rules[name] = sequence([frag, skip]) if ignored else frag
        cfg.labels[name] = f"terminal '{name}'"
        cfg.notes[name] = [f"/{_short(frag.regex)}/"]
        if name in ignored:
            cfg.rules[f"%raw {name}"] = frag
            cfg.labels[f"%raw {name}"] = f"terminal '{name}' (%ignore)"
    return cfg


def _used_terminals(rules: dict[str, Expr], start: str, terminals: dict[str, Any]) -> list[str]:
    """Terminals the rules reachable from ``start`` use, in first-use order."""
    seen, order, pending = {start}, [], [start]
    while pending:
        for name in refs(rules[pending.pop()]):
            if name in seen:
                continue
            seen.add(name)
            if name in terminals:
                order.append(name)
            elif name in rules:
                pending.append(name)
    return order


# ------------------------------------------------------------------------------------------ loading
def _load(text: str) -> Any:
    """Lark's parsed grammar (rule and terminal definitions as trees); errors as GrammarSyntaxError."""
    from lark.exceptions import LarkError
    from lark.load_grammar import GrammarBuilder

    class Builder(GrammarBuilder):
        def do_import(
            self, dotted_path: tuple[str, ...], base_path: Any, aliases: dict, base_mangle: Any = None
        ) -> None:
            if base_path is not None:
                raise GrammarSyntaxError(
                    f"%import of '{'.'.join(dotted_path)}' reads a file: only Lark's bundled grammars "
                    "(common, unicode, ...) can be imported",
                    "%import",
                )
            super().do_import(dotted_path, base_path, aliases, base_mangle)

    builder = Builder(False, [])
    try:
        builder.load_grammar(text, "<grammar>")
        return builder.build()
    except GrammarSyntaxError:
        raise
    except (LarkError, OSError, AssertionError) as exc:
        raise GrammarSyntaxError(f"invalid Lark grammar: {_first_lines(str(exc))}", "syntax") from None


def _first_lines(message: str, lines: int = 6) -> str:
    return " ".join(line.strip() for line in message.strip().splitlines()[:lines] if line.strip())


def _terminal_patterns(grammar: Any) -> dict[str, Any]:
    """Terminal name -> Lark ``Pattern`` (``None`` for a ``%declare``d terminal)."""
    from lark.load_grammar import PrepareLiterals, TerminalTreeToPattern, nr_deepcopy_tree

    to_pattern = PrepareLiterals() * TerminalTreeToPattern()
    out: dict[str, Any] = {}
    for name, (tree, _priority) in grammar.term_defs:
        out[name] = (
            None if tree is None else _lark_call(lambda t=tree: to_pattern.transform(nr_deepcopy_tree(t)))
        )
    return out


def _rule_trees(grammar: Any, terminals: dict[str, Any]) -> dict[str, Any]:
    """Rule name -> tree with literals turned into (anonymous) terminals and templates applied.

    Anonymous terminals are added to ``terminals``."""
    from lark.lexer import TerminalDef
    from lark.load_grammar import (
        ApplyTemplates,
        PrepareAnonTerminals,
        PrepareLiterals,
        ValidateSymbols,
        nr_deepcopy_tree,
    )

    defs = [TerminalDef(name, pattern) for name, pattern in terminals.items() if pattern is not None]
    rule_defs = [(n, p, nr_deepcopy_tree(t), o) for n, p, t, o in grammar.rule_defs]
    anonymous = PrepareAnonTerminals(defs)
    transformer = PrepareLiterals() * ValidateSymbols() * anonymous * ApplyTemplates(rule_defs)
    out: dict[str, Any] = {}
    i = 0
    while i < len(rule_defs):  # templates append their instances to rule_defs
        name, params, tree, _options = rule_defs[i]
        i += 1
        if not params:
            out[name] = _lark_call(lambda t=tree: transformer.transform(t))
    for definition in defs:
        terminals.setdefault(definition.name, definition.pattern)
    return out


def _lark_call(build: Callable[[], Any]) -> Any:
    """``build()``, with Lark's errors as GrammarSyntaxError."""
    from lark.exceptions import LarkError

    try:
        return build()
    except (LarkError, AssertionError) as exc:
        raise GrammarSyntaxError(f"invalid Lark grammar: {_first_lines(str(exc))}", "syntax") from None


# ------------------------------------------------------------------------------------------ rules
def _expr(tree: Any, rule: str) -> Expr:
    """The expression of a rule tree (``expansions`` / ``alias`` / ``expansion`` / ``expr`` / ``maybe``)."""
    from lark import Tree
    from lark.grammar import NonTerminal, Terminal

    if isinstance(tree, Terminal | NonTerminal):
        return Ref(tree.name)
    if not isinstance(tree, Tree):
        raise GrammarSyntaxError(f"unexpected item {tree!r}", "syntax", f"rule '{rule}'")
    kind = tree.data
    if kind == "expansions":
        return alternatives(_expr(child, rule) for child in tree.children)
    if kind == "alias":
        return _expr(tree.children[0], rule)
    if kind == "expansion":
        return sequence(_expr(child, rule) for child in tree.children)
    if kind == "maybe":
        return Rep(_expr(tree.children[0], rule), 0, 1)
    if kind == "expr":
        return _repeat(tree, rule)
    raise GrammarSyntaxError(f"the construct '{kind}' is not supported", str(kind), f"rule '{rule}'")


def _repeat(tree: Any, rule: str) -> Expr:
    item, op, *bounds = tree.children
    inner = _expr(item, rule)
    if op == "?":
        return Rep(inner, 0, 1)
    if op == "*":
        return Rep(inner, 0, None)
    if op == "+":
        return Rep(inner, 1, None)
    if op == "~":
        lo, hi = (int(bounds[0]), int(bounds[-1]))
        if hi < lo:
            raise GrammarSyntaxError(f"bad repeat range {lo}..{hi}", "~", f"rule '{rule}'")
        return Rep(inner, lo, hi)
    raise GrammarSyntaxError(f"the operator '{op}' is not supported", str(op), f"rule '{rule}'")


# ------------------------------------------------------------------------------------------ terminals
def _terminal_frag(name: str, pattern: Any) -> Frag:
    """The fragment of terminal ``name`` (exact; ``common.ESCAPED_STRING`` by its lexer meaning)."""
    where = f"terminal '{name}'"
    if pattern is None:
        raise GrammarSyntaxError(
            "a %declare'd terminal has no pattern (it comes from a post-lexer)", "%declare", where
        )
    regex = pattern.to_regexp()
    if regex == _escaped_string_regex():
        return Frag(ESCAPED_STRING, False)
    fragment = translate(regex, where)
    return Frag(fragment, re.fullmatch(regex, "") is not None)


@cache
def _escaped_string_regex() -> str:
    """The regex Lark builds for ``common.ESCAPED_STRING`` (``.*?`` and a lookbehind)."""
    grammar = _load("%import common.ESCAPED_STRING\nstart: ESCAPED_STRING\n")
    return _terminal_patterns(grammar)["ESCAPED_STRING"].to_regexp()


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
