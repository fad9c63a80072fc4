"""String-content regexes: any character, ECMA-262 ``pattern`` translation, ``format`` values.

Contract: each function returns a regex over the JSON text *between the quotes* of a string whose
decoded value satisfies the constraint; a character is one decoded code point (an escape such as
``\\n`` or ``\\u00e9``, or a surrogate-pair escape, counts as one). Lone surrogate escapes are never
generated. Patterns are translated exactly or rejected (``SchemaError`` keyword ``pattern``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .errors import SchemaError
from .regex import MAX_CP, CPSet, alt, cps_complement, cps_json, cps_norm, cps_subtract, group, repeat, seq

ANY_CHAR = cps_json([(0, MAX_CP)]) or ""
_DIGIT: CPSet = [(0x30, 0x39)]
_WORD: CPSet = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
# `\s`: ECMA-262's white space that Python's `re` (which `jsonschema` validates `pattern` with) agrees on;
# U+FEFF (ECMA only) is left out so every generated string satisfies both dialects.
_SPACE: CPSet = cps_norm(
    [
        (9, 13),
        (0x20, 0x20),
        (0xA0, 0xA0),
        (0x1680, 0x1680),
        (0x2000, 0x200A),
        (0x2028, 0x2029),
        (0x202F, 0x202F),
        (0x205F, 0x205F),
        (0x3000, 0x3000),
    ]
)
_PYTHON_ONLY_SPACE: CPSet = [(0x1C, 0x1F), (0x85, 0x85)]  # `\s` in Python, not in ECMA-262
_ASCII: CPSet = [(0, 0x7F)]
_DOT: CPSet = cps_complement([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)])


# Unconstrained string content: no length is counted, so any escape (even a lone surrogate) is fine.
LOOSE_CONTENT = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'


def length_regex(lo: int, hi: int | None) -> str:
    """Any string content of ``lo``..``hi`` characters."""
    return repeat(ANY_CHAR, lo, hi)


@dataclass
class _Piece:
    rx: str
    lo: int
    hi: int | None  # None = unbounded


class _PatternParser:
    """Recursive-descent ECMA-262 (no flags) regex -> JSON-string-content regex."""

    def __init__(self, pattern: str, pointer: str) -> None:
        self.p = pattern
        self.i = 0
        self.pointer = pointer

    def fail(self, why: str) -> SchemaError:
        return SchemaError(f"pattern {self.p!r}: {why}", "pattern", self.pointer)

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> str:
        alts = []
        while True:
            whole = self._whole_group()
            if whole is not None:  # `(^a|b$)|...`: the group's alternatives keep their own anchors
                alts.append(whole)
                if self.peek() == "|":
                    self.i += 1
                    continue
                return alt(alts)
            anchored_start = self.peek() == "^"
            if anchored_start:
                self.i += 1
            piece = self.concat(top=True)
            anchored_end = False
            if self.peek() == "$":
                self.i += 1
                anchored_end = True
            parts = [] if anchored_start else [group(ANY_CHAR) + "*"]
            parts.append(piece.rx)
            if not anchored_end:
                parts.append(group(ANY_CHAR) + "*")
            alts.append(seq([p for p in parts if p]))
            if self.peek() == "|":
                self.i += 1
                continue
            if self.peek() is not None:
                raise self.fail(f"unexpected {self.peek()!r}")
            return alt(alts)

    def _whole_group(self) -> str | None:
        """When the alternative starting here is one plain or capturing group, the search regex of its
        contents parsed as a pattern of their own (their anchors then stand at the alternative's ends)."""
        if self.peek() != "(" or self.p.startswith("(?", self.i) and not self.p.startswith("(?:", self.i):
            return None
        end = self._group_end(self.i)
        if end is None or self.p[end : end + 1] not in ("", "|"):
            return None
        start = self.i + (3 if self.p.startswith("(?:", self.i) else 1)
        inner = _PatternParser(self.p[start : end - 1], self.pointer).parse()
        self.i = end
        return inner

    def _group_end(self, i: int) -> int | None:
        """The index after the parenthesis closing the group opened at `i` (escapes and classes skipped)."""
        depth, n = 0, len(self.p)
        while i < n:
            c = self.p[i]
            if c == "\\":
                i += 2
                continue
            if c == "[":
                i += 1
                if self.p[i : i + 1] == "^":
                    i += 1
                if self.p[i : i + 1] == "]":
                    i += 1
                while i < n and self.p[i] != "]":
                    i += 2 if self.p[i] == "\\" else 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return None

    def alternation(self) -> _Piece:
        pieces = [self.concat(top=False)]
        while self.peek() == "|":
            self.i += 1
            pieces.append(self.concat(top=False))
        his = [p.hi for p in pieces]
        return _Piece(
            alt(p.rx for p in pieces),
            min(p.lo for p in pieces),
            None if None in his else max(h for h in his if h is not None),
        )

    def concat(self, top: bool) -> _Piece:
        items: list[_Piece] = []
        while True:
            c = self.peek()
            if c is None or c in "|)" or (top and c == "$" and self.p[self.i + 1 : self.i + 2] in ("", "|")):
                break
            if c in "^$":
                raise self.fail("anchor inside the pattern")
            items.append(self.quantified())
        his = [p.hi for p in items]
        return _Piece(
            seq([p.rx for p in items]),
            sum(p.lo for p in items),
            None if None in his else sum(h for h in his if h is not None),
        )

    def quantified(self) -> _Piece:
        atom = self.atom()
        c = self.peek()
        lo: int
        hi: int | None
        if c == "*":
            lo, hi = 0, None
        elif c == "+":
            lo, hi = 1, None
        elif c == "?":
            lo, hi = 0, 1
        elif c == "{" and self._brace():
            lo, hi = self._brace()  # type: ignore[misc]
            self.i = self.p.index("}", self.i)
        else:
            return atom
        self.i += 1
        if self.peek() == "?":
            self.i += 1
        if hi is not None and hi < lo:
            raise self.fail("bad quantifier")
        if (hi or lo) > 1000:
            raise self.fail("repetition count too large")
        if not atom.rx:
            return atom
        return _Piece(
            repeat(atom.rx, lo, hi), atom.lo * lo, None if hi is None or atom.hi is None else atom.hi * hi
        )

    def _brace(self) -> tuple[int, int | None] | None:
        j = self.p.find("}", self.i)
        if j < 0:
            return None
        body = self.p[self.i + 1 : j]
        a, comma, b = body.partition(",")
        if not a.isdigit() or (b and not b.isdigit()):
            return None
        return int(a), (int(b) if b else None) if comma else int(a)

    def atom(self) -> _Piece:
        c = self.p[self.i]
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?<", self.i) and self.p[self.i + 2 : self.i + 3] not in ("=", "!"):
                self.i = self.p.index(">", self.i) + 1
            elif self.peek() == "?":
                raise self.fail("lookaround is not supported")
            inner = self.alternation()
            if self.peek() != ")":
                raise self.fail("unbalanced parenthesis")
            self.i += 1
            return _Piece(group(inner.rx) if inner.rx else "", inner.lo, inner.hi)
        if c == "[":
            return self._set(self._class())
        if c == ".":
            self.i += 1
            return self._set(_DOT)
        if c in "*+?{}])" and not (c in "}]" or (c == "{" and not self._brace())):
            raise self.fail(f"nothing to repeat at {self.i}")
        if c == "\\":
            return self._set(self._escape(in_class=False))
        self.i += 1
        return self._set([(ord(c), ord(c))])

    def _set(self, cps: CPSet) -> _Piece:
        rx = cps_json(cps)
        if rx is None:
            raise self.fail("empty character set")
        return _Piece(rx, 1, 1)

    def _escape(self, in_class: bool) -> CPSet:
        self.i += 1
        if self.i >= len(self.p):
            raise self.fail("trailing backslash")
        c = self.p[self.i]
        self.i += 1
        simple = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
        if c in simple:
            return simple[c]
        if c in "DWS":
            # complement restricted to ASCII: Unicode-aware engines disagree outside it
            excluded = cps_norm(_SPACE + _PYTHON_ONLY_SPACE) if c == "S" else simple[c.lower()]
            return cps_subtract(_ASCII, excluded)
        table = {"t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
        if c in table:
            return [(table[c], table[c])]
        if c == "0" and not (self.peek() or "x").isdigit():
            return [(0, 0)]
        if c == "b" and in_class:
            return [(8, 8)]
        if c in "xu":
            n = 2 if c == "x" else 4
            h = self.p[self.i : self.i + n]
            if len(h) == n and all(ch in "0123456789abcdefABCDEF" for ch in h):
                self.i += n
                v = int(h, 16)
                if 0xD800 <= v <= 0xDFFF:
                    raise self.fail("surrogate escape")
                return [(v, v)]
            raise self.fail(f"bad \\{c} escape")
        if c == "c":
            ch = self.peek()
            if ch and ch.isalpha():
                self.i += 1
                v = ord(ch) % 32
                return [(v, v)]
            raise self.fail("bad \\c escape")
        if c.isalnum():
            raise self.fail(f"unsupported escape \\{c}")
        return [(ord(c), ord(c))]

    def _class(self) -> CPSet:
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        items: CPSet = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.fail("unterminated class")
            if c == "]" and not first:
                self.i += 1
                break
            if c == "]":  # ECMA: [] is empty, []..] not special
                self.i += 1
                break
            first = False
            lo_set = self._class_atom()
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                hi_set = self._class_atom()
                if (
                    len(lo_set) != 1
                    or lo_set[0][0] != lo_set[0][1]
                    or len(hi_set) != 1
                    or hi_set[0][0] != hi_set[0][1]
                ):
                    raise self.fail("class range with a class escape")
                if hi_set[0][0] < lo_set[0][0]:
                    raise self.fail("reversed class range")
                items.append((lo_set[0][0], hi_set[0][0]))
            else:
                items.extend(lo_set)
        s = cps_norm(items)
        if negate:
            s = cps_complement(s)
            if any(lo > 0x7F for lo, _ in items) or self._had_class_escape:
                s = cps_subtract(s, [(0x80, MAX_CP)])
        return s

    _had_class_escape = False

    def _class_atom(self) -> CPSet:
        c = self.p[self.i]
        if c == "\\":
            if self.p[self.i + 1 : self.i + 2] in ("d", "w", "s", "D", "W", "S"):
                self._had_class_escape = True
            return self._escape(in_class=True)
        self.i += 1
        return [(ord(c), ord(c))]


@lru_cache(maxsize=4096)
def pattern_regex(pattern: str, pointer: str) -> str:
    """String content whose decoded value contains a match of the ECMA-262 ``pattern`` (cached: a pattern
    is read for every key it is matched against and every string that uses it)."""
    return _PatternParser(pattern, pointer).parse()


def anchored_pattern(pattern: str, pointer: str) -> tuple[str, int, int | None] | None:
    """For a pattern anchored at both ends: (content regex, min chars, max chars); else None."""
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")):
        return None
    parser = _PatternParser(pattern[1:-1], pointer)
    try:
        piece = parser.concat(top=False)
    except SchemaError:  # `^a$|^b$`: anchors inside; `pattern_regex` reads it per alternative
        return None
    if parser.peek() is not None:  # `^a|b$` is `(^a)|(b$)`, not `^(a|b)$`
        return None
    return piece.rx, piece.lo, piece.hi


# ---------------------------------------------------------------- formats

_D2 = "[0-9]{2}"
_MONTH_DAY = alt(
    [
        "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
        "(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
        "02-(?:0[1-9]|1[0-9]|2[0-8])",
    ]
)
_LEAP = "[0-9]{2}(?:0[48]|[2468][048]|[13579][26])"
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999 (`jsonschema` refuses 0000)
DATE = alt([_YEAR + "-" + _MONTH_DAY, _LEAP + "-02-29"])
TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SHORT_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?"
_HOST = _LABEL + "(?:\\." + _LABEL + "){0,2}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_URI_CHARS = "[A-Za-z0-9._~!$&'()*+,;=:@-]"

FORMATS: dict[str, tuple[str, int, int | None]] = {
    "date": (DATE, 10, 10),
    "date-time": (DATE + "T" + TIME, 20, 32),
    "email": (
        "[A-Za-z0-9_+-]{1,20}(?:\\.[A-Za-z0-9_+-]{1,20}){0,2}@"
        + _SHORT_LABEL
        + "(?:\\."
        + _SHORT_LABEL
        + "){0,2}\\.[A-Za-z]{2,10}",
        6,
        62 + 1 + 3 * 23 + 11,
    ),
    # RFC 3339 full-time, offset required (what draft 7+ asks and every reading accepts); no leap second
    "time": (TIME, 9, 21),
    "uuid": ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", 36, 36),
    "ipv4": (_OCTET + "(?:\\." + _OCTET + "){3}", 7, 15),
    "hostname": (_HOST, 1, 191),
    "uri": (
        "https?:\\\\?/\\\\?/"
        + _HOST
        + "(?::[0-9]{1,5})?(?:\\\\?/"
        + _URI_CHARS
        + "*)*(?:\\?"
        + _URI_CHARS
        + "*)?",
        8,
        None,
    ),
}
# the full form, eight groups of one to four hex digits (no `::` compression, no embedded IPv4 or zone)
_HEX4 = "[0-9a-fA-F]{1,4}"
FORMATS["ipv6"] = (_HEX4 + "(?::" + _HEX4 + "){7}", 15, 39)
FORMATS["uri-reference"] = FORMATS["uri"]
FORMATS["iri"] = FORMATS["uri"]
FORMATS["iri-reference"] = FORMATS["uri"]
FORMATS["idn-hostname"] = FORMATS["hostname"]
FORMATS["idn-email"] = FORMATS["email"]

# Formats defined by the JSON Schema specification that are not enforced: rejected.
KNOWN_UNSUPPORTED = {
    "duration",
    "json-pointer",
    "relative-json-pointer",
    "regex",
    "uri-template",
}
