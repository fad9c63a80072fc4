"""Regex-building helpers shared by the compiler.

Contract: every function returns a regex string valid with the same meaning in Python ``re`` and in
Rust ``regex-automata`` (outlines-core): literals, ``[...]`` classes with explicit ranges, ``(?:...)``
groups, ``|`` and the quantifiers ``? * + {n} {n,m}``. Code-point sets are sorted lists of inclusive
``(lo, hi)`` intervals; :func:`cps_json` turns a set of *decoded* string characters into the regex of
their JSON-text forms (raw character, short escape, ``\\uXXXX`` with either hex case, surrogate pair).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from .ir import is_call

MAX_CP = 0x10FFFF
CPSet = list[tuple[int, int]]

_META = set("\\.^$|?*+()[]{}")
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]", re.DOTALL)
_NOT_PAREN = re.compile(r"[^()]+")
_CLASS_META = set("\\]^-[&~")
_SHORT = {
    0x22: '\\\\"',
    0x5C: "\\\\\\\\",
    0x2F: "\\\\/",
    0x08: "\\\\b",
    0x0C: "\\\\f",
    0x0A: "\\\\n",
    0x0D: "\\\\r",
    0x09: "\\\\t",
}


def lit(text: str) -> str:
    """Regex matching exactly ``text``."""
    return "".join("\\" + c if c in _META else c for c in text)


@lru_cache(maxsize=1 << 16)
def is_atom(rx: str) -> bool:
    """True when ``rx`` can take a quantifier without grouping (cached: fragments are tested repeatedly)."""
    if len(rx) == 1:
        return rx not in _META
    if len(rx) == 2 and rx[0] == "\\":
        return True
    if rx[0] == "[":
        i, n = 1, len(rx)
        if i < n and rx[i] == "^":
            i += 1
        while i < n:
            if rx[i] == "\\":
                i += 2
                continue
            if rx[i] == "]":
                return i == n - 1
            i += 1
        return False
    if rx.startswith("(?&"):
        return is_call(rx)
    if rx.startswith("(?:"):  # one group iff its parenthesis closes last (escapes and classes removed)
        plain = _ESCAPE_OR_CLASS.sub("_", rx)
        if not plain.endswith(")"):
            return False
        parens = _NOT_PAREN.sub("", plain)
        opens = np.cumsum(np.frombuffer(parens.encode("ascii"), dtype=np.uint8) == 40)
        depth = 2 * opens - np.arange(1, len(parens) + 1)
        return bool(depth[:-1].min(initial=1) > 0)
    return False


def group(rx: str) -> str:
    return rx if is_atom(rx) else f"(?:{rx})"


def alt(parts: Iterable[str]) -> str:
    """Alternation of ``parts`` (deduplicated, order kept) as one atom-safe regex."""
    uniq = list(dict.fromkeys(parts))
    if not uniq:
        raise ValueError("empty alternation")
    if len(uniq) == 1:
        return uniq[0]
    if "" in uniq:
        rest = [p for p in uniq if p]
        return group(alt(rest)) + "?"
    return "(?:" + "|".join(uniq) + ")"


def concat_atom(rx: str) -> str:
    """Make an alternation safe to concatenate."""
    if "|" not in rx:
        return rx
    return rx if is_atom(rx) else f"(?:{rx})"


def opt(rx: str) -> str:
    return group(rx) + "?" if rx else ""


def star(rx: str) -> str:
    return group(rx) + "*" if rx else ""


def repeat(rx: str, lo: int, hi: int | None) -> str:
    """``rx`` repeated between ``lo`` and ``hi`` (None = unbounded) times."""
    if hi is not None and hi == 0 or not rx:
        return ""
    g = group(rx)
    if hi is None:
        return g + ("*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}")
    if lo == hi:
        return rx if lo == 1 else g + f"{{{lo}}}"
    if lo == 0 and hi == 1:
        return g + "?"
    return g + f"{{{lo},{hi}}}"


# ---------------------------------------------------------------- code-point sets


def cps_norm(intervals: Iterable[tuple[int, int]]) -> CPSet:
    out: CPSet = []
    for lo, hi in sorted(intervals):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def cps_complement(s: CPSet) -> CPSet:
    out: CPSet = []
    prev = 0
    for lo, hi in cps_norm(s):
        if lo > prev:
            out.append((prev, lo - 1))
        prev = hi + 1
    if prev <= MAX_CP:
        out.append((prev, MAX_CP))
    return out


def cps_intersect(a: CPSet, b: CPSet) -> CPSet:
    out: CPSet = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if lo <= hi:
                out.append((lo, hi))
    return cps_norm(out)


def cps_subtract(a: CPSet, b: CPSet) -> CPSet:
    return cps_intersect(a, cps_complement(b))


def _class_char(cp: int) -> str:
    c = chr(cp)
    if c in _CLASS_META:
        return "\\" + c
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    return c


def cps_class(s: CPSet) -> str:
    """A ``[...]`` class (or single literal) for a non-empty set without surrogates."""
    s = cps_norm(s)
    if len(s) == 1 and s[0][0] == s[0][1]:
        cp = s[0][0]
        if cp < 0x20 or cp == 0x7F:
            return f"\\x{cp:02x}"
        return lit(chr(cp))
    body = []
    for lo, hi in s:
        if lo == hi:
            body.append(_class_char(lo))
        elif hi == lo + 1:
            body.append(_class_char(lo) + _class_char(hi))
        else:
            body.append(_class_char(lo) + "-" + _class_char(hi))
    return "[" + "".join(body) + "]"


def _hex_digit_class(lo: int, hi: int) -> str:
    chars: CPSet = []
    if lo <= 9:
        chars.append((0x30 + lo, 0x30 + min(hi, 9)))
    if hi >= 10:
        a, b = max(lo, 10) - 10, hi - 10
        chars.append((0x61 + a, 0x61 + b))
        chars.append((0x41 + a, 0x41 + b))
    return cps_class(chars)


def _dec_digit_class(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"[{lo}-{hi}]"


def fixed_range(lo: int, hi: int, width: int, base: int = 10) -> str:
    """Regex for the ``width``-digit strings (leading zeros included) of the integers in [lo, hi]."""
    dc = _hex_digit_class if base == 16 else _dec_digit_class
    if width == 0:
        return ""
    p = base ** (width - 1)
    lo_d, lo_r = divmod(lo, p)
    hi_d, hi_r = divmod(hi, p)
    if lo_d == hi_d:
        return dc(lo_d, lo_d) + concat_atom(fixed_range(lo_r, hi_r, width - 1, base))
    anyd = repeat(dc(0, base - 1), width - 1, width - 1)
    parts = []
    start, end = lo_d, hi_d
    if lo_r != 0:
        parts.append(dc(lo_d, lo_d) + concat_atom(fixed_range(lo_r, p - 1, width - 1, base)))
        start += 1
    tail = None
    if hi_r != p - 1:
        tail = dc(hi_d, hi_d) + concat_atom(fixed_range(0, hi_r, width - 1, base))
        end -= 1
    if start <= end:
        parts.append(dc(start, end) + anyd)
    if tail is not None:
        parts.append(tail)
    return alt(parts)


_SURR = [(0xD800, 0xDFFF)]
# Printable ASCII but `"`, `\` and `/`: written raw only, never as a `\u00XX` escape (a documented spelling
# restriction that keeps every "any character but these letters" small: see `json_schema.excluding`).
RAW_ONLY: CPSet = [(0x20, 0x21), (0x23, 0x2E), (0x30, 0x5B), (0x5D, 0x7E)]


def cps_json(s: CPSet) -> str | None:
    """Regex of the JSON-string-content forms generated for one character of the set ``s`` (raw, short
    escapes, ``\\uXXXX`` escapes but of `RAW_ONLY` characters, surrogate pairs); None if empty."""
    return _cps_json(tuple(cps_norm(s)))


@lru_cache(maxsize=4096)
def _cps_json(s: tuple[tuple[int, int], ...]) -> str | None:
    s = cps_subtract(list(s), _SURR)
    if not s:
        return None
    parts = []
    raw = cps_subtract(s, [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])
    if raw:
        parts.append(cps_class(raw))
    for cp, esc in _SHORT.items():
        if cps_intersect(s, [(cp, cp)]):
            parts.append(esc)
    bmp = cps_subtract(cps_intersect(s, [(0, 0xFFFF)]), RAW_ONLY)
    hexparts = [fixed_range(lo, hi, 4, 16) for lo, hi in bmp]
    if hexparts:
        parts.append("\\\\u" + concat_atom(alt(hexparts)))
    for lo, hi in cps_intersect(s, [(0x10000, MAX_CP)]):
        parts.extend(_surrogate_pairs(lo, hi))
    return alt(parts)


def _surrogate_pairs(lo: int, hi: int) -> list[str]:
    ha, la = divmod(lo - 0x10000, 0x400)
    hb, lb = divmod(hi - 0x10000, 0x400)

    def pair(h1: int, h2: int, l1: int, l2: int) -> str:
        hx = fixed_range(0xD800 + h1, 0xD800 + h2, 4, 16)
        lx = fixed_range(0xDC00 + l1, 0xDC00 + l2, 4, 16)
        return "\\\\u" + concat_atom(hx) + "\\\\u" + concat_atom(lx)

    if ha == hb:
        return [pair(ha, ha, la, lb)]
    out = []
    start, end = ha, hb
    if la != 0:
        out.append(pair(ha, ha, la, 0x3FF))
        start += 1
    tail = None
    if lb != 0x3FF:
        tail = pair(hb, hb, 0, lb)
        end -= 1
    if start <= end:
        out.append(pair(start, end, 0, 0x3FF))
    if tail is not None:
        out.append(tail)
    return out


def char_literal(c: str) -> str:
    """Regex of the JSON-string-content forms generated for the known character ``c``.

    Printable ASCII is only generated raw (``"`` ``\\`` and ``/`` also escaped); other characters in
    every form (see :func:`cps_json`). The result is a subset of the exact forms, never a superset.
    """
    cp = ord(c)
    if 0x20 <= cp < 0x7F and c not in '"\\/':
        return lit(c)
    if 0xD800 <= cp <= 0xDFFF:  # a lone surrogate: valid JSON only as a \uXXXX escape (no UTF-8 form)
        return "\\\\u" + concat_atom(fixed_range(cp, cp, 4, 16))
    return cps_json([(cp, cp)]) or ""


def string_literal(text: str) -> str:
    """Regex of the JSON string token (with quotes) for ``text``."""
    return '"' + "".join(concat_atom(char_literal(c)) for c in text) + '"'


def seq(parts: Sequence[str]) -> str:
    return "".join(concat_atom(p) for p in parts)
