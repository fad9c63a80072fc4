"""Exact regexes for JSON numbers and integers, optionally bounded.

Contract: :func:`integer_regex` and :func:`number_regex` return regexes whose language is a set of
JSON number texts whose values all satisfy the given bounds. Restrictions (documented subset):
integer parts have at most ``INT_DIGITS`` digits; integers are generated canonically (no fraction or
exponent, no ``-0``); bounded numbers are generated without exponent; unbounded numbers allow an
exponent of at most ``EXP_DIGITS`` digits. Fraction digits are unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache

from .regex import alt, concat_atom, fixed_range, opt, repeat

INT_DIGITS = 15
FRACTION_DIGITS = 15  # fractional digits a bound may have; more are rounded inward
EXP_DIGITS = 3
_INT_MAX = 10**INT_DIGITS - 1


@dataclass(frozen=True)
class Bound:
    value: Decimal
    exclusive: bool


@lru_cache(maxsize=4096)
def _nonneg_int(lo: int, hi: int) -> str | None:
    """Canonical decimal texts of the integers in [lo, hi] (0 <= lo)."""
    hi = min(hi, _INT_MAX)
    if lo > hi:
        return None
    parts = []
    full: list[int] = []  # digit counts n >= 2 covered entirely
    for n in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (n - 1) if n > 1 else 0)
        b = min(hi, 10**n - 1)
        if n > 1 and a == 10 ** (n - 1) and b == 10**n - 1:
            full.append(n)
        elif a <= b:
            parts.append(fixed_range(a, b, n))
    if full:
        parts.append("[1-9]" + repeat("[0-9]", full[0] - 1, full[-1] - 1))
    return alt(parts)


@lru_cache(maxsize=4096)
def integer_regex(lo: int | None, hi: int | None) -> str | None:
    """Integers in [lo, hi] (None = unbounded); None when empty. Cached: most schemas ask the same few."""
    parts = []
    if hi is None or hi >= 0:
        pos = _nonneg_int(max(lo or 0, 0), _INT_MAX if hi is None else hi)
        if pos:
            parts.append(pos)
    if lo is None or lo < 0:
        neg = _nonneg_int(max(1, -hi if hi is not None else 1), _INT_MAX if lo is None else -lo)
        if neg:
            parts.append("-" + concat_atom(neg))
    return alt(parts) if parts else None


_ANY_FRAC = "[0-9]*"


def _frac(lo: str | None, lo_ex: bool, hi: str | None, hi_ex: bool) -> tuple[str | None, bool]:
    """Digit strings s (read as 0.s) with lo <(=) 0.s <(=) hi; returns (regex for non-empty s, empty ok).

    ``lo``/``hi`` are fraction digit strings without trailing zeros ("" = zero) or None (no bound).
    """
    if lo == "" and not lo_ex:
        lo = None
    empty_ok = (lo is None) and (hi is None or hi != "" or not hi_ex)
    if lo is None and hi is None:
        return "[0-9]+", True
    if lo == "" and hi is None:
        return "[0-9]*[1-9][0-9]*", False
    if lo is None and hi == "":
        return (None, False) if hi_ex else ("0+", True)
    if hi == "":  # lo == "" exclusive and hi zero
        return None, False
    parts = []
    for d in range(10):
        c = str(d)
        if lo is None or lo == "":
            nlo, nlo_ex = lo, lo_ex
            if lo == "" and d > 0:
                nlo = None
        else:
            if c < lo[0]:
                continue
            nlo, nlo_ex = (None, False) if c > lo[0] else (lo[1:], lo_ex)
        if hi is None:
            nhi, nhi_ex = None, False
        else:
            if c > hi[0]:
                continue
            nhi, nhi_ex = (None, False) if c < hi[0] else (hi[1:], hi_ex)
        rest, rest_empty = _frac(nlo, nlo_ex, nhi, nhi_ex)
        options = []
        if rest_empty:
            options.append("")
        if rest is not None:
            options.append(rest)
        if options:
            parts.append((c, alt(options) if options != [""] else ""))
    if not parts:
        return None, empty_ok
    # merge digits with identical continuation
    by_rest: dict[str, list[int]] = {}
    for c, rest in parts:
        by_rest.setdefault(rest, []).append(int(c))
    alts = []
    for rest, digits in by_rest.items():
        cls = _digits_class(digits)
        alts.append(cls + concat_atom(rest))
    return alt(alts), empty_ok


def _digits_class(digits: list[int]) -> str:
    if len(digits) == 1:
        return str(digits[0])
    runs: list[list[int]] = []
    for d in sorted(digits):
        if runs and d == runs[-1][1] + 1:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    return "[" + "".join(f"{a}-{b}" if b > a else str(a) for a, b in runs) + "]"


def _split(v: Decimal) -> tuple[int, str]:
    """Non-negative decimal -> (integer part, fraction digits without trailing zeros)."""
    text = format(v, "f")
    ip, _, fp = text.partition(".")
    return int(ip), fp.rstrip("0")


def _magnitude(lo: Bound, hi: Bound | None) -> str | None:
    """Texts ``I(.F)?`` (no sign) of the values m with lo <(=) m <(=) hi, lo >= 0."""
    li, lf = _split(lo.value)
    if hi is None:
        hi_i, hf, hex_ = _INT_MAX, None, False
    else:
        hi_i, hf, hex_ = *_split(hi.value), hi.exclusive
        if hi_i > _INT_MAX:
            hi_i, hf, hex_ = _INT_MAX, None, False
    if li > hi_i:
        return None

    def piece(
        ip_lo: int, ip_hi: int, flo: str | None, flo_ex: bool, fhi: str | None, fhi_ex: bool
    ) -> str | None:
        if ip_lo > ip_hi:
            return None
        ip = _nonneg_int(ip_lo, ip_hi)
        if ip is None:
            return None
        rx, empty_ok = _frac(flo, flo_ex, fhi, fhi_ex)
        if rx is None and not empty_ok:
            return None
        if rx is None:
            return ip
        frac = "\\." + concat_atom(rx)
        return concat_atom(ip) + (opt(frac) if empty_ok else concat_atom(frac))

    parts: list[str | None] = []
    if li == hi_i:
        parts.append(piece(li, li, lf, lo.exclusive, hf, hex_))
    else:
        parts.append(piece(li, li, lf, lo.exclusive, None, False))
        parts.append(piece(li + 1, hi_i - 1, None, False, None, False))
        parts.append(piece(hi_i, hi_i, None, False, hf, hex_))
    found = [p for p in parts if p]
    return alt(found) if found else None


def _within_digits(bound: Bound | None, upward: bool) -> Bound | None:
    """`bound` with at most FRACTION_DIGITS fractional digits, moved inward when it has more (a lower bound
    up, an upper one down): the numbers generated are then a subset, and the regex stays shallow."""
    if bound is None or -bound.value.as_tuple().exponent <= FRACTION_DIGITS:  # type: ignore[operator]
        return bound
    rounding = ROUND_CEILING if upward else ROUND_FLOOR
    moved = bound.value.quantize(Decimal(1).scaleb(-FRACTION_DIGITS), rounding=rounding)
    return Bound(moved, bound.exclusive and moved == bound.value)


@lru_cache(maxsize=4096)
def number_regex(lo: Bound | None, hi: Bound | None) -> str | None:
    """Numbers with lo <(=) x <(=) hi; None when empty. Unbounded -> the generic number grammar. Cached."""
    lo, hi = _within_digits(lo, upward=True), _within_digits(hi, upward=False)
    if lo is None and hi is None:
        exp = "[eE][+-]?" + repeat("[0-9]", 1, EXP_DIGITS)
        return "-?" + concat_atom(_nonneg_int(0, _INT_MAX) or "0") + "(?:\\.[0-9]+)?" + opt(exp)
    zero = Bound(Decimal(0), False)
    parts = []
    if hi is None or hi.value > 0 or (hi.value == 0 and not hi.exclusive):
        plo = lo if lo is not None and lo.value >= 0 else zero
        p = _magnitude(plo, hi)
        if p:
            parts.append(p)
    if lo is None or lo.value < 0:
        mlo = Bound(Decimal(0), True)
        if hi is not None and hi.value < 0:
            mlo = Bound(-hi.value, hi.exclusive)
        mhi = None if lo is None else Bound(-lo.value, lo.exclusive)
        m = _magnitude(mlo, mhi)
        if m:
            parts.append("-" + concat_atom(m))
    return alt(parts) if parts else None
