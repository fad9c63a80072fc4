"""Python ``re`` patterns (Lark terminals) translated to IR regex fragments of exactly the same language.

Contract: :func:`translate` returns a fragment whose full-match language equals ``re.fullmatch(pattern, s)``'s
(Unicode ``str`` semantics): classes, ``\\d \\w \\s`` and case-insensitive matching are expanded to explicit
code-point classes computed with Python's own tables, so ``(?i:...)`` / the ``i`` flag (including Python's
extra folds such as ``K`` ~ KELVIN SIGN), ``s`` (dot matches newline), ``x`` (verbose) and ``m``/``u``
(no effect without anchors) are exact. Constructs whose meaning is not a regular language over the token,
or depends on how a lexer matches, raise :class:`GrammarSyntaxError` naming the construct: anchors and
``\\b``, lookaround, backreferences, conditionals, atomic groups, possessive and lazy quantifiers (a lazy
``*?`` only means something as a lexer's shortest match), and the ``a`` (ASCII) / ``L`` (locale) flags.
"""

from __future__ import annotations

import re
from functools import cache

from .errors import GrammarSyntaxError
from .ir import NOTHING
from .regex import CPSet, alt, cps_class, cps_complement, cps_norm, cps_subtract, group, repeat, seq

try:  # Python 3.11+: the regex parser, used only for its syntax tree
    from re import _constants as C
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

import _sre

_ALLOWED_FLAGS = C.SRE_FLAG_IGNORECASE | C.SRE_FLAG_DOTALL | C.SRE_FLAG_MULTILINE | C.SRE_FLAG_VERBOSE
_ALLOWED_FLAGS |= C.SRE_FLAG_UNICODE
_SURROGATES: CPSet = [(0xD800, 0xDFFF)]
_ALL: CPSet = [(0, 0x10FFFF)]
_NAMES = {
    "AT": "an anchor (^, $, \\A, \\Z, \\b, \\B)",
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group (?(n)...)",
    "ATOMIC_GROUP": "an atomic group (?>...)",
    "POSSESSIVE_REPEAT": "a possessive quantifier",
    "MIN_REPEAT": "a lazy quantifier (*?, +?, ??, {m,n}?)",
}
_WHY = {"MIN_REPEAT": "it only means something as a lexer's shortest match, not as a language"}
_CATEGORIES = {
    "CATEGORY_DIGIT": ("\\d", str.isdecimal, False),
    "CATEGORY_NOT_DIGIT": ("\\D", str.isdecimal, True),
    "CATEGORY_SPACE": ("\\s", str.isspace, False),
    "CATEGORY_NOT_SPACE": ("\\S", str.isspace, True),
    "CATEGORY_WORD": ("\\w", lambda c: c.isalnum() or c == "_", False),
    "CATEGORY_NOT_WORD": ("\\W", lambda c: c.isalnum() or c == "_", True),
}


def translate(pattern: str, where: str) -> str:
    """The IR fragment of the Python regex ``pattern`` (``where`` names it in errors, e.g. "terminal 'X'")."""
    try:
        tree = sre_parse.parse(pattern, 0)
    except (re.error, OverflowError) as exc:
        raise GrammarSyntaxError(f"invalid regular expression /{pattern}/: {exc}", "regex", where) from None
    except RecursionError:
        raise GrammarSyntaxError("the regular expression nests too deep", "nesting", where) from None
    flags = tree.state.flags
    _check_flags(flags, where)
    try:
        return _items(list(tree), flags, where)
    except RecursionError:
        raise GrammarSyntaxError("the regular expression nests too deep", "nesting", where) from None


def _check_flags(flags: int, where: str) -> None:
    bad = flags & ~_ALLOWED_FLAGS
    if bad:
        letters = "".join(k for k, v in (("a", C.SRE_FLAG_ASCII), ("L", C.SRE_FLAG_LOCALE)) if bad & v)
        raise GrammarSyntaxError(
            f"regex flag '{letters or bad}' is not supported (only i, s, m, x, u)", f"flag '{letters}'", where
        )


def _items(items: list, flags: int, where: str) -> str:
    return seq([_item(op, av, flags, where) for op, av in items])


def _item(op, av, flags: int, where: str) -> str:
    if op is C.LITERAL or op is C.NOT_LITERAL or op is C.ANY or op is C.IN:
        return _charset(_char_set(op, av, flags))
    if op is C.BRANCH:
        return alt(_items(list(branch), flags, where) for branch in av[1])
    if op is C.SUBPATTERN:
        _group, add, remove, body = av
        inner = (flags | add) & ~remove
        _check_flags(inner, where)
        return group(_items(list(body), inner, where))
    if op is C.MAX_REPEAT:
        lo, hi, body = av
        return repeat(_items(list(body), flags, where), lo, None if hi is C.MAXREPEAT else hi)
    name = str(op)
    what = _NAMES.get(name, f"the regex construct {name}")
    why = _WHY.get(name, "it cannot be enforced exactly")
    raise GrammarSyntaxError(f"{what} is not supported: {why}", name.lower(), where)


def _charset(cps: CPSet) -> str:
    cps = cps_subtract(cps, _SURROGATES)
    return cps_class(cps) if cps else NOTHING


# ------------------------------------------------------------------------------------------ char sets
def _char_set(op, av, flags: int) -> CPSet:
    """The code points one single-character item matches under ``flags`` (Python's semantics)."""
    if op is C.ANY:
        return _ALL if flags & C.SRE_FLAG_DOTALL else [(0, 9), (11, 0x10FFFF)]
    if op is C.LITERAL:
        plain, text = [(av, av)], re.escape(chr(av))
    elif op is C.NOT_LITERAL:
        plain, text = cps_complement([(av, av)]), f"[^{_class_char(av)}]"
    else:
        plain, text = _class_set(av), _class_text(av)
    if not flags & C.SRE_FLAG_IGNORECASE:
        return plain
    return _casefold(text, tuple(map(tuple, plain)))


def _class_set(items) -> CPSet:
    negate = False
    out: CPSet = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            out.append((av, av))
        elif op is C.RANGE:
            out.append(av)
        elif op is C.CATEGORY:
            out.extend(_category(str(av)))
        else:  # pragma: no cover - sre_parse yields nothing else inside a class
            raise GrammarSyntaxError(f"unsupported class item {op}", "class", None)
    out = cps_norm(out)
    return cps_complement(out) if negate else out


def _class_char(cp: int) -> str:
    return f"\\U{cp:08x}"


def _class_text(items) -> str:
    """The class ``items`` as Python regex text (for matching it case-insensitively with ``re``)."""
    parts = []
    for op, av in items:
        if op is C.NEGATE:
            parts.insert(0, "^")
        elif op is C.LITERAL:
            parts.append(_class_char(av))
        elif op is C.RANGE:
            parts.append(f"{_class_char(av[0])}-{_class_char(av[1])}")
        else:
            parts.append(_CATEGORIES[str(av)][0])
    return "[" + "".join(parts) + "]"


@cache
def _category(name: str) -> tuple[tuple[int, int], ...]:
    """Python's Unicode ``\\d \\s \\w`` (and complements) as code-point intervals."""
    _text, test, negated = _CATEGORIES[name]
    base = _intervals(cp for cp in range(0x110000) if test(chr(cp)))
    return tuple(cps_complement(base) if negated else base)


def _intervals(cps) -> CPSet:
    out: CPSet = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


@cache
def _cased() -> tuple[tuple[int, ...], CPSet]:
    """The code points that have case (Python's ``_sre.unicode_iscased``), as a list and as intervals."""
    cased = tuple(cp for cp in range(0x110000) if _sre.unicode_iscased(cp))
    return cased, _intervals(cased)


@cache
def _casefold(text: str, plain: tuple[tuple[int, int], ...]) -> CPSet:
    """What the one-character regex ``text`` (case-sensitive set ``plain``) matches with ``re.IGNORECASE``:
    uncased code points match as without the flag; each cased one is asked to ``re`` itself."""
    cased, cased_set = _cased()
    matcher = re.compile(text, re.IGNORECASE | re.DOTALL)
    hits = [(cp, cp) for cp in cased if matcher.fullmatch(chr(cp))]
    return cps_norm(cps_subtract(list(plain), cased_set) + hits)
