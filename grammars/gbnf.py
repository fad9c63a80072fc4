"""GBNF grammars (llama.cpp's ``grammar`` parameter; XGrammar's EBNF) compiled to the IR.

Contract: :func:`compile_gbnf` returns the :class:`grammars.ir.RuleGrammar` of the strings the ``root`` rule
derives. Syntax (llama.cpp's ``grammars/README.md``): ``name ::= alternatives`` (names ``[A-Za-z0-9_-]+``),
``"literal"``, character classes ``[a-z]`` / ``[^"\\\\]`` with ranges, ``.`` (any character), ``( )``, ``|``,
postfix ``*``, ``+``, ``?``, ``{m}``, ``{m,}``, ``{m,n}``, ``{,n}``, rule references, ``#`` comments.
Escapes in literals and classes: ``\\n \\r \\t \\f \\v \\a \\b \\0``, ``\\xHH``, ``\\uHHHH``,
``\\UHHHHHHHH`` and a backslash before any other ASCII punctuation (the character itself). Whitespace,
newlines included, only separates items: a rule ends where the next ``name ::=`` starts (a superset of
llama.cpp's line rules).
Rules become IR rules through :mod:`grammars.cfg` (immediate left recursion rewritten, other left recursion
rejected). Errors are :class:`GrammarSyntaxError` naming the rule and the offending text: syntax errors,
undefined or duplicate rules, a missing root, unknown escapes, lone surrogates, llama.cpp token references
(``<[id]>``, ``<token>``: they name tokens of one vocabulary, not text).
"""

from __future__ import annotations

from .cfg import Cfg, Expr, Frag, Ref, Rep, alternatives, lower, sequence
from .errors import GrammarSyntaxError
from .ir import NOTHING, RuleGrammar
from .json_schema import CompiledSchema
from .regex import CPSet, cps_class, cps_complement, cps_norm, cps_subtract, seq

MAX_NESTING = 200
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_SIMPLE_ESCAPES = {"n": 10, "r": 13, "t": 9, "f": 12, "v": 11, "a": 7, "b": 8, "0": 0}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_SURROGATES: CPSet = [(0xD800, 0xDFFF)]


def compile_gbnf(text: str, root: str = "root") -> RuleGrammar:
    """The IR grammar of the GBNF grammar ``text`` from rule ``root`` (see the module docstring)."""
    return translate_gbnf(text, root).grammar


def translate_gbnf(text: str, root: str = "root") -> CompiledSchema:
    """:func:`compile_gbnf` with one explain entry per rule kept."""
    return lower(gbnf_cfg(text, root))


def gbnf_cfg(text: str, root: str = "root") -> Cfg:
    """The context-free grammar of ``text``."""
    rules = _Parser(text).grammar()
    if root not in rules:
        raise GrammarSyntaxError(f"the grammar has no '{root}' rule (the start symbol)", "root")
    return Cfg(rules, Ref(root))


class _Parser:
    """Recursive descent over the text; ``rule`` is the rule being parsed (for messages)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.rule: str | None = None
        self.depth = 0

    # -------------------------------------------------------------- helpers
    def error(self, message: str, construct: str = "syntax") -> GrammarSyntaxError:
        line = self.text.count("\n", 0, self.pos) + 1
        near = self.text[self.pos : self.pos + 20].split("\n")[0]
        where = f"rule '{self.rule}'" if self.rule else None
        return GrammarSyntaxError(f"{message} at line {line} near {near!r}", construct, where)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t\r\n":
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            else:
                return

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _NAME_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def at_rule_start(self) -> bool:
        """Whether a ``name ::=`` starts here (the end of the previous rule)."""
        saved = self.pos
        found = bool(self.name())
        self.skip_space()
        found = found and self.text.startswith("::=", self.pos)
        self.pos = saved
        return found

    # -------------------------------------------------------------- grammar
    def grammar(self) -> dict[str, Expr]:
        rules: dict[str, Expr] = {}
        self.skip_space()
        while self.pos < len(self.text):
            self.rule = None
            name = self.name()
            if not name:
                raise self.error("expected a rule name")
            self.skip_space()
            if not self.text.startswith("::=", self.pos):
                raise self.error(f"expected '::=' after '{name}'")
            if name in rules:
                raise self.error(f"rule '{name}' is defined twice", "duplicate rule")
            self.rule = name
            self.pos += 3
            self.skip_space()
            rules[name] = self.alternates()
            if self.pos < len(self.text) and not self.at_rule_start():
                raise self.error("unexpected text")
        if not rules:
            raise self.error("the grammar defines no rule")
        return rules

    def alternates(self) -> Expr:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            self.skip_space()
            options.append(self.sequence())
        return alternatives(options)

    def sequence(self) -> Expr:
        items: list[Expr] = []
        while self.pos < len(self.text) and self.peek() not in "|)" and not self.at_rule_start():
            items.append(self.postfix(self.primary()))
            self.skip_space()
        return sequence(items)

    def primary(self) -> Expr:
        c = self.peek()
        if c == '"':
            return self.literal()
        if c == "[":
            return self.char_class()
        if c == ".":
            self.pos += 1
            return Frag(_charset([(0, 0x10FFFF)]), False)
        if c == "(":
            return self.parenthesized()
        if c == "<":
            raise self.error("token references (<[id]>, <token>) are not supported", "token reference")
        name = self.name()
        if not name:
            raise self.error("expected a literal, a class, '(' or a rule name")
        return Ref(name)

    def parenthesized(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"parentheses nest deeper than {MAX_NESTING}", "nesting")
        self.pos += 1
        self.skip_space()
        inner = self.alternates()
        if self.peek() != ")":
            raise self.error("expected ')'")
        self.pos += 1
        self.depth -= 1
        return inner

    def postfix(self, item: Expr) -> Expr:
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                self.pos += 1
                item = Rep(item, *{"*": (0, None), "+": (1, None), "?": (0, 1)}[c])
            elif c == "{":
                item = Rep(item, *self.braces())
            else:
                return item

    def braces(self) -> tuple[int, int | None]:
        self.pos += 1
        lo, comma, hi = self.number(), False, None
        self.skip_space()
        if self.peek() == ",":
            comma = True
            self.pos += 1
            hi = self.number()
        self.skip_space()
        if self.peek() != "}" or (lo is None and hi is None):
            raise self.error("expected '{m}', '{m,}', '{m,n}' or '{,n}'")
        self.pos += 1
        lo = lo or 0
        hi = hi if comma else lo
        if hi is not None and hi < lo:
            raise self.error(f"bad repeat range {{{lo},{hi}}}")
        return lo, hi

    def number(self) -> int | None:
        self.skip_space()
        start = self.pos
        while self.peek().isdigit() and self.peek().isascii():
            self.pos += 1
        return int(self.text[start : self.pos]) if self.pos > start else None

    # -------------------------------------------------------------- terminals
    def literal(self) -> Frag:
        self.pos += 1
        chars: list[int] = []
        while self.peek() != '"':
            if not self.peek() or self.peek() == "\n":
                raise self.error("unterminated string literal")
            chars.append(self.char())
        self.pos += 1
        return Frag(seq([_charset([(c, c)]) for c in chars]), not chars)

    def char_class(self) -> Frag:
        self.pos += 1
        negate = self.peek() == "^"
        self.pos += negate
        ranges: CPSet = []
        while self.peek() != "]":
            if not self.peek():
                raise self.error("unterminated character class")
            lo = self.char()
            hi = lo
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                hi = self.char()
                if hi < lo:
                    raise self.error("bad class range (end before start)")
            ranges.append((lo, hi))
        self.pos += 1
        cps = cps_norm(ranges)
        return Frag(_charset(cps_complement(cps) if negate else cps), False)

    def char(self) -> int:
        """One (possibly escaped) character of a literal or class, as a code point."""
        c = self.peek()
        self.pos += 1
        if c != "\\":
            if 0xD800 <= ord(c) <= 0xDFFF:
                raise self.error("a lone surrogate is not a character", "escape")
            return ord(c)
        e = self.peek()
        self.pos += 1
        if e in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[e]
        if e in _HEX_ESCAPES:
            digits = self.text[self.pos : self.pos + _HEX_ESCAPES[e]]
            if len(digits) != _HEX_ESCAPES[e] or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(f"\\{e} needs {_HEX_ESCAPES[e]} hex digits", "escape")
            self.pos += len(digits)
            cp = int(digits, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise self.error(f"\\{e}{digits} is not a Unicode scalar value", "escape")
            return cp
        if e and e.isascii() and not e.isalnum() and e.isprintable():
            return ord(e)
        raise self.error(f"unknown escape '\\{e}'", "escape")


def _charset(cps: CPSet) -> str:
    cps = cps_subtract(cps, _SURROGATES)
    return cps_class(cps) if cps else NOTHING
