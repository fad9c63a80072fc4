"""Fast recursive-descent parser for the regex subset the JSON-schema compiler emits.

One C-level `findall` splits the regex into tokens; the descent builds terms directly, with char classes and
escapes cached by their text (they repeat a lot in JSON-schema regexes). Anything outside the subset raises
`RegexUnsupported`; `automaton.parse_regex` then falls back to Python's own regex parser.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from constrained.token_index.errors import RegexUnsupported

_TOKEN = re.compile(
    r"""\\x\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\u\{[0-9a-fA-F]+\}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\.
    |\[\^?\]?(?:\\x\{[0-9a-fA-F]+\}|\\u\{[0-9a-fA-F]+\}|\\.|[^\]\\])*\]
    |\(\?&[0-9]+(?:&~?[0-9]+)*\)|\(\?:|\(\?P?<[A-Za-z_][A-Za-z0-9_]*>|\(\?|\(|\)|\|
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
            if t.startswith("(?&"):
                atom = store.call(t)
            elif c0 == "(":
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


_ESCAPE_LETTERS = frozenset(map(ord, "xuUntrfvadDsSwW"))


def _scan(regex: str) -> dict[int, int] | None:
    """Matching ')' of every group-opening '(' (vectorised), or None when the regex needs the eager parser
    (odd bracket or escape forms, anchors, lookarounds, ...: it gives the precise error or handles them)."""
    a = np.frombuffer(regex.encode("utf-32-le"), dtype=np.uint32)
    n = len(a)
    if n == 0:
        return {}
    idx = np.arange(n)
    bs = a == 92
    run = idx - np.maximum.accumulate(np.where(bs, -1, idx))  # backslashes ending at i
    escaped = np.zeros(n, dtype=bool)
    escaped[1:] = run[:-1] % 2 == 1
    plain = ~escaped & ~bs
    if bs[-1] and not escaped[-1]:
        return None
    esc_next = a[1:][(bs & ~escaped)[:-1]]
    if len(esc_next) and (esc_next.max() >= 128 or not _ESC_OK[esc_next].all()):
        return None
    lb = plain & (a == 91)
    rb = plain & (a == 93)
    brackets = np.flatnonzero(lb | rb)
    if len(brackets) % 2 or not (lb[brackets[0::2]].all() and rb[brackets[1::2]].all()):
        return None
    opens_c = brackets[0::2]
    first = opens_c + 1 + (a[np.minimum(opens_c + 1, n - 1)] == 94)  # first class item ('[^' skipped)
    if (first == brackets[1::2]).any():
        return None  # '[]...]' / '[^]...]' forms
    inside = (np.cumsum(lb) - np.cumsum(rb)) > 0
    setop = (a == 38) | (a == 45) | (a == 126)
    if (inside[:-1] & setop[:-1] & plain[:-1] & plain[1:] & (a[:-1] == a[1:])).any():
        return None  # class set operations
    out = plain & ~inside & ~rb
    if (out & ((a == 94) | (a == 36))).any():
        return None  # anchors
    po = out & (a == 40)
    pc = out & (a == 41)
    opens = np.flatnonzero(po)
    if len(opens):
        nxt = a[np.minimum(opens + 1, n - 1)]
        nxt2 = a[np.minimum(opens + 2, n - 1)]
        nxt3 = a[np.minimum(opens + 3, n - 1)]
        q = nxt == 63
        ok = ~q | (nxt2 == 58) | (nxt2 == 38) | (nxt2 == 80) | ((nxt2 == 60) & (nxt3 != 61) & (nxt3 != 33))
        if not ok.all():
            return None
    depth = np.cumsum(po.astype(np.int64)) - np.cumsum(pc.astype(np.int64))
    if len(depth) and (depth.min() < 0 or depth[-1] != 0):
        return None
    events = np.flatnonzero(po | pc)
    if not len(events):
        return {}
    level = depth[events] + pc[events]
    order = np.lexsort((events, level))
    pairs = events[order].reshape(-1, 2)
    if not po[pairs[:, 0]].all():
        return None
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))


# ASCII characters that may follow a backslash: punctuation and the supported escape letters
_ESC_OK = np.asarray([not chr(c).isalnum() or c in _ESCAPE_LETTERS for c in range(128)], dtype=bool)


class LazyParser:
    """Parses group bodies on demand: a group becomes a `K_LAZY` term until the automaton needs it."""

    def __init__(self, regex: str, store, close_of: dict[int, int]) -> None:
        self.regex = regex
        self.store = store
        self.close_of = close_of
        self.atoms: dict[str, int] = {}

    @classmethod
    def try_parse(cls, regex: str, store) -> int | None:
        close_of = _scan(regex)
        if close_of is None:
            return None
        return cls(regex, store, close_of).parse_segment(0, len(regex))

    def parse_segment(self, start: int, end: int) -> int:
        regex, store, match = self.regex, self.store, _TOKEN.match
        branches = []
        seq: list[int] = []
        pos = start
        while pos < end:
            m = match(regex, pos, end)
            t = m.group()
            c0 = t[0]
            if t == "|":
                branches.append(store.cat_all(seq))
                seq = []
                pos += 1
                continue
            if t.startswith("(?&"):
                atom = store.call(t)
                pos = m.end()
            elif c0 == "(":
                if t == "(?":
                    raise RegexUnsupported(
                        "inline flags, lookarounds and other group kinds are not supported"
                    )
                close = self.close_of[pos]
                body = pos + len(t)
                atom = store.lazy(regex[body:close], self, body, close)
                pos = close + 1
            elif c0 in "*+?" or (c0 == "{" and len(t) > 1) or t == ")":
                raise RegexUnsupported(f"unexpected {t!r} at offset {pos}")
            else:
                atom = self.atoms.get(t)
                if atom is None:
                    try:
                        atom = store.char_class(atom_ranges(t))
                    except _Unsupported as exc:
                        raise RegexUnsupported(str(exc)) from exc
                    self.atoms[t] = atom
                pos = m.end()
            if pos < end:
                m = match(regex, pos, end)
                q = m.group()
                q0 = q[0]
                if q0 in "*+?" or (q0 == "{" and len(q) > 1):
                    atom = store.rep(atom, *_quantifier(q))
                    pos = m.end()
                    if pos < end:
                        q = match(regex, pos, end).group()
                        if q[0] in "*+?" or (q[0] == "{" and len(q) > 1):
                            raise RegexUnsupported("nested repetition operators")
            seq.append(atom)
        branches.append(store.cat_all(seq))
        return store.alt(branches)


def _quantifier(q: str) -> tuple[int, int | None, bool]:
    greedy = not (len(q) > 1 and q[-1] == "?")
    core = q if greedy else q[:-1]
    if core == "*":
        return 0, None, greedy
    if core == "+":
        return 1, None, greedy
    if core == "?":
        return 0, 1, greedy
    inner = core[1:-1]
    if "," in inner:
        lo_s, hi_s = inner.split(",")
        lo, hi = int(lo_s), (int(hi_s) if hi_s else None)
    else:
        lo = hi = int(inner)
    if hi is not None and hi < lo:
        raise RegexUnsupported(f"invalid repetition {q}")
    return lo, hi, greedy
