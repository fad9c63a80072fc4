"""Fast recursive-descent parser for the regex subset the JSON-schema compiler emits.

One C-level `findall` splits the regex into tokens; the descent builds terms directly, with char classes and
escapes cached by their text (they repeat a lot in JSON-schema regexes). Anything outside the subset raises
`RegexUnsupported`; `automaton.parse_regex` then falls back to Python's own regex parser.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(
    r"""\\x\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\u\{[0-9a-fA-F]+\}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\.
    |\[\^?\]?(?:\\x\{[0-9a-fA-F]+\}|\\u\{[0-9a-fA-F]+\}|\\.|[^\]\\])*\]
    |\(\?:|\(\?P?<[A-Za-z_][A-Za-z0-9_]*>|\(\?|\(|\)|\|
    |[*+?]\??|\{[0-9]+(?:,[0-9]*)?\}\??
    |.""",
    re.DOTALL | re.VERBOSE,
)
_CLASS_ITEM = re.compile(
    r"\\x\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\u\{[0-9a-fA-F]+\}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\.|.",
    re.DOTALL,
)
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "a": 7}
_CATEGORIES = {"d": "digit", "D": "not_digit", "s": "space", "S": "not_space", "w": "word", "W": "not_word"}


class _Unsupported(Exception):
    pass


def _escape_codepoint(text: str) -> int:
    """Codepoint of a one-character escape (`\\x41`, `\\u{41}`, `\\n`, `\\.`); raises for classes/anchors."""
    c = text[1]
    if c in "xuU":
        return int(text[2:].strip("{}"), 16)
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c]
    if c.isascii() and c.isalnum():
        raise _Unsupported(f"unsupported escape {text}")
    return ord(c)


@lru_cache(maxsize=4096)
def class_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """Normalized codepoint ranges of a bracket class `[...]`."""
    from constrained.token_index.automaton import _category, _complement, _normalize

    body = text[1:-1]
    negate = body.startswith("^")
    if negate:
        body = body[1:]
    items = _CLASS_ITEM.findall(body)
    if "[" in items or any(a + b in ("&&", "--", "~~") for a, b in zip(items, items[1:], strict=False)):
        raise _Unsupported("nested classes and class set operations are not supported")
    ranges: list[tuple[int, int]] = []
    i, n = 0, len(items)
    while i < n:
        item = items[i]
        if item[0] == "\\" and item[1] in _CATEGORIES:
            ranges.extend(_category(_CATEGORIES[item[1]]))
            i += 1
            continue
        lo = _escape_codepoint(item) if item[0] == "\\" else ord(item)
        if i + 2 < n and items[i + 1] == "-":
            end = items[i + 2]
            if end[0] == "\\" and end[1] in _CATEGORIES:
                raise _Unsupported("class range ending in a category")
            hi = _escape_codepoint(end) if end[0] == "\\" else ord(end)
            if hi < lo:
                raise _Unsupported(f"invalid class range in {text}")
            ranges.append((lo, hi))
            i += 3
        else:
            ranges.append((lo, lo))
            i += 1
    norm = _normalize(ranges)
    return _complement(norm) if negate else norm


@lru_cache(maxsize=4096)
def atom_ranges(token: str) -> tuple[tuple[int, int], ...]:
    """Normalized codepoint ranges of a one-character atom: literal, escape, `.` or class."""
    from constrained.token_index.automaton import _ANY_BUT_NL, _category, _normalize

    if token == ".":
        return _ANY_BUT_NL
    if token[0] == "[" and len(token) > 1:
        return class_ranges(token)
    if token[0] == "\\":
        if token[1] in _CATEGORIES:
            return _category(_CATEGORIES[token[1]])
        cp = _escape_codepoint(token)
    else:
        if token in "^$":
            raise _Unsupported("anchors are not supported")
        cp = ord(token)
    return _normalize([(cp, cp)])


def parse_fast(regex: str, store) -> int:
    """Term of `regex` in `store`; raises `_Unsupported` for syntax outside the subset."""
    toks = _TOKEN.findall(regex)
    n = len(toks)
    atom_cache: dict[str, int] = {}

    def parse_alt(i: int) -> tuple[int, int]:
        branches = []
        seq: list[int] = []
        while i < n:
            t = toks[i]
            c0 = t[0]
            if t == "|":
                branches.append(store.cat_all(seq))
                seq = []
                i += 1
                continue
            if t == ")":
                break
            if c0 == "(":
                if t == "(?":
                    raise _Unsupported("inline flags, lookarounds and other group kinds are not supported")
                atom, i = parse_alt(i + 1)
                if i >= n:
                    raise _Unsupported("unbalanced parenthesis")
            elif c0 in "*+?" or (c0 == "{" and len(t) > 1):
                raise _Unsupported(f"repetition operator {t} without an operand")
            else:
                atom = atom_cache.get(t)
                if atom is None:
                    atom = store.char_class(atom_ranges(t))
                    atom_cache[t] = atom
            i += 1
            if i < n:
                q = toks[i]
                q0 = q[0]
                if q0 in "*+?" or (q0 == "{" and len(q) > 1):
                    greedy = not (len(q) > 1 and q[-1] == "?")
                    core = q if greedy else q[:-1]
                    if core == "*":
                        lo, hi = 0, None
                    elif core == "+":
                        lo, hi = 1, None
                    elif core == "?":
                        lo, hi = 0, 1
                    else:
                        inner = core[1:-1]
                        if "," in inner:
                            a, b = inner.split(",")
                            lo, hi = int(a), (int(b) if b else None)
                        else:
                            lo = hi = int(inner)
                        if hi is not None and hi < lo:
                            raise _Unsupported(f"invalid repetition {q}")
                    atom = store.rep(atom, lo, hi, greedy)
                    i += 1
                    if i < n and (toks[i][0] in "*+?" or (toks[i][0] == "{" and len(toks[i]) > 1)):
                        raise _Unsupported("nested repetition operators")
            seq.append(atom)
        branches.append(store.cat_all(seq))
        return store.alt(branches), i

    term, end = parse_alt(0)
    if end != n:
        raise _Unsupported("unbalanced parenthesis")
    return term
