"""A lazily built byte-level automaton for the LANGUAGE of a rule grammar (full-match semantics, as
`re.fullmatch`): a regex, or regex fragments over rules (`grammars.ir.RuleGrammar`) that call each other.

The regex is parsed into interned terms over BYTES (a Unicode class becomes an alternation of UTF-8 byte
sequences, so tokens may split a multi-byte character). A DFA state is a tuple of "threads" (continuation
terms: Antimirov partial derivatives); a state accepts when a thread is nullable, and every thread keeps
transitioning after a match. So `[0-9]|[1-9][0-9]` accepts both `4` and `42` — unlike outlines-core's
`Index`, whose leftmost-first determinisation drops the longer alternative once the shorter one matched
(and refuses a token that ends one byte past a match): a compiled schema means its whole language.

Rows (256 byte transitions) are computed on first visit only, so nested bounded repeats never blow up:
`r{n,m}` is a counter term and its derivatives are built on demand.

Rules: a call `(?&N)` is a `K_REF` term, its body parsed on first use. Expanding a call of a recursive rule
appends a `RET` marker to the continuation, so a thread (a right-nested concatenation) *is* the stack: the
markers in its spine count the open recursive calls, and a thread deeper than the grammar's `stack_limit`
is dropped. Threads that cannot reach the end of the output (through an unproductive recursive rule or an
empty intersection) are dropped too, so every live state can still complete.

Intersections: `(?&N&M)` is a `K_AND` term; its linear form is the product of its operands' (bytes in both
masks, the intersection of the continuations), and its shortest string comes from a breadth-first search
over its derivatives (the operands are regular: the compiler never intersects recursive rules).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import deque
from collections.abc import Callable
from functools import cache, lru_cache

import numpy as np

try:  # Python 3.11+: the (private) regex parser; only used to get a syntax tree.
    from re import _constants as C
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

EMPTY, EPS, RET = 0, 1, 2  # term ids: the empty language, the empty string, the return marker
K_EMPTY, K_EPS, K_BYTES, K_CAT, K_ALT, K_REP, K_LAZY, K_REF, K_RET, K_AND, K_NOT = range(11)
UNBOUNDED = 1 << 62  # a repeat without an upper bound
SEARCH_LIMIT = 50_000  # derivative states explored to find an intersection's shortest string
QUICK_DEPTH_FIRST = 256  # derivative states an emptiness check explores depth-first before going wide
BREADTH_FIRST = 2_000  # derivative states an emptiness check explores breadth-first before going deep
# Derivatives recurse once per nested group or chained rule (an object's optional properties chain their
# rules): Python's recursion limit is raised to this while the automaton computes (`grammars.stack`).
DEEP_FRAMES = 50_000
# Terms one grammar's automaton may intern (~0.4 KiB each with their caches, so ~0.8 GiB at the bound): most
# dev-corpus walks use ~25,000, a 5,000-character string with a 100-word pattern 700,000; nested complements
# of patterns could otherwise take every byte of memory.
MAX_TERMS = 2_000_000
UNIVERSAL_LIMIT = 4096  # character-boundary states explored to show a head takes any content prefix
ALL_BYTES = (1 << 256) - 1
DEAD = -1
MAX_CODEPOINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)


from constrained.token_index.errors import RegexUnsupported  # noqa: E402
from grammars.errors import SchemaError  # noqa: E402
from grammars.ir import LazyGrammar, RuleGrammar  # noqa: E402
from grammars.stack import deep_recursion  # noqa: E402

# ----------------------------------------------------------------------------------------------- Unicode


def _normalize(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged codepoint ranges with the surrogates removed."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    res = []
    for lo, hi in out:
        if hi < SURROGATES[0] or lo > SURROGATES[1]:
            res.append((lo, hi))
            continue
        if lo < SURROGATES[0]:
            res.append((lo, SURROGATES[0] - 1))
        if hi > SURROGATES[1]:
            res.append((SURROGATES[1] + 1, hi))
    return tuple(r for r in res if r[0] <= r[1])


def _complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODEPOINT:
        out.append((nxt, MAX_CODEPOINT))
    return _normalize(out)


@lru_cache(maxsize=1 << 16)
def utf8_sequences(lo: int, hi: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """UTF-8 byte-range sequences matching exactly the scalar values in [lo, hi] (as Rust's Utf8Sequences).
    Cached: every grammar's classes are made of the same few ranges."""
    out = []
    stack = [(lo, hi)]
    while stack:
        lo, hi = stack.pop()
        if lo > hi:
            continue
        if lo <= SURROGATES[1] and hi >= SURROGATES[0]:  # remove surrogates
            stack.append((SURROGATES[1] + 1, hi))
            stack.append((lo, SURROGATES[0] - 1))
            continue
        split = False
        for edge in (0x7F, 0x7FF, 0xFFFF):
            if lo <= edge < hi:
                stack.append((edge + 1, hi))
                stack.append((lo, edge))
                split = True
                break
        if split:
            continue
        if hi <= 0x7F:
            out.append([(lo, hi)])
            continue
        for i in range(1, 4):
            m = (1 << (6 * i)) - 1
            if lo & ~m != hi & ~m:
                if lo & m != 0:
                    stack.append(((lo | m) + 1, hi))
                    stack.append((lo, lo | m))
                    split = True
                    break
                if hi & m != m:
                    stack.append((hi & ~m, hi))
                    stack.append((lo, (hi & ~m) - 1))
                    split = True
                    break
        if split:
            continue
        a, b = chr(lo).encode(), chr(hi).encode()
        out.append(tuple(zip(a, b, strict=True)))
    return tuple(out)


# Nd added in Unicode 15/16 (regex-automata's tables are Unicode 16; Python 3.11's are 14)
_ND_UNICODE_16 = (
    (0x10D40, 0x10D49),
    (0x116D0, 0x116E3),
    (0x11BF0, 0x11BF9),
    (0x11F50, 0x11F59),
    (0x16130, 0x16139),
    (0x16D70, 0x16D79),
    (0x1CCF0, 0x1CCF9),
    (0x1E4F0, 0x1E4F9),
    (0x1E5F1, 0x1E5FA),
)

_WHITE_SPACE = (
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)


def _ranges_where(pred) -> tuple[tuple[int, int], ...]:
    out = []
    start = None
    for cp in range(MAX_CODEPOINT + 2):
        ok = cp <= MAX_CODEPOINT and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    return _normalize(out)


@cache
def _category(cat) -> tuple[tuple[int, int], ...]:
    """Rust regex's Unicode meaning of \\d, \\s, \\w (Python's Unicode tables; approximations noted)."""
    name = str(cat).lower()
    if "digit" in name:
        base = _normalize([*_ranges_where(lambda c: unicodedata.category(c) == "Nd"), *_ND_UNICODE_16])
    elif "space" in name:
        base = _normalize(list(_WHITE_SPACE))
    elif "word" in name:
        word_cats = {"Mn", "Mc", "Me", "Nd", "Pc", "Nl"}
        base = _ranges_where(
            lambda c: c.isalpha() or unicodedata.category(c) in word_cats or c in "\u200c\u200d"
        )
    else:
        raise RegexUnsupported(f"unsupported category {cat}")
    return _complement(base) if "not" in name else base


# ----------------------------------------------------------------------------------------------- terms


class TermStore:
    """Hash-consed terms over bytes, with cached ordered linear forms. `rules` are the grammar's rule
    fragments (parsed on first call), `recursive` the ids of the rules that call themselves, `open_content`
    those every JSON-string content string is a prefix of (`RuleGrammar.open_content`), `productive` the
    recursive ones known to match some finite string (`RuleGrammar.productive`)."""

    def __init__(
        self,
        rules: tuple[str, ...] = (),
        recursive: frozenset[int] = frozenset(),
        open_content: frozenset[int] = frozenset(),
        productive: frozenset[int] = frozenset(),
        force: Callable[[int], None] | None = None,
    ) -> None:
        self.kind: list[int] = [K_EMPTY, K_EPS, K_RET]
        self.data: list[tuple] = [(), (), ()]
        self.depth: list[int] = [0, 0, 1]  # RET markers in a term's concatenation spine (open calls)
        self._nullable: list[bool | None] = [False, True, True]
        self._shortest: dict[int, bytes | None] = {EMPTY: None, EPS: b"", RET: b""}
        self._productive: dict[int, bool] = {}
        self.has_intersections = False
        self.rules = rules
        self.recursive = recursive
        self.open_content = open_content
        self.promised = productive  # recursive rules known to end (`RuleGrammar.productive`)
        # whether some term may match nothing: through a recursive rule not known to end (intersections,
        # found while parsing, set `has_intersections`)
        self.may_recurse_endlessly = bool(recursive - productive)
        self._force = force  # writes a pending rule of a `LazyGrammar` (whose containers these are)
        self._rule_terms: dict[int, int] = {}
        self._rule_shortest: dict[int, bytes | None] = {}  # recursive rules, solved together
        self._open: set[int] = set()  # calls whose linear form is being computed (left recursion check)
        self._lazy: dict[int, tuple] = {}  # K_LAZY term -> (parser, start, end) of its unparsed group body
        self._forced: dict[int, int] = {}
        self._intern: dict[tuple, int] = {}
        self._lf: dict[int, tuple] = {}
        self._class_cache: dict[tuple, int] = {}
        self._content_char: dict[int, bool] = {}
        self._universal: dict[tuple[int, ...], bool] = {}
        self._steps: dict[tuple, list[tuple[int, ...]] | None] = {}

    def _mk(self, kind: int, data: tuple, nullable: bool | None) -> int:
        key = (kind, data)
        tid = self._intern.get(key)
        if tid is None:
            tid = len(self.kind)
            if tid >= MAX_TERMS:  # the memory bound of one grammar's automaton (hostile intersections)
                raise RegexUnsupported(f"automaton exceeds {MAX_TERMS} terms")
            self.kind.append(kind)
            self.data.append(data)
            self.depth.append((data[0] == RET) + self.depth[data[1]] if kind == K_CAT else 0)
            self._nullable.append(nullable)
            self._intern[key] = tid
        return tid

    def byteset(self, mask: int) -> int:
        return EMPTY if mask == 0 else self._mk(K_BYTES, (mask,), False)

    def cat(self, a: int, b: int) -> int:
        if a == EMPTY or b == EMPTY:
            return EMPTY
        if a == EPS:
            return b
        if b == EPS:
            return a
        if self.kind[a] != K_CAT:
            return self._mk(K_CAT, (a, b), None)
        out = b  # right-nest `a`'s items onto `b` (iteratively: concatenations can be thousands long)
        for item in reversed(list(self._spine(a))):
            out = self._mk(K_CAT, (item, out), None)
        return out

    def cat_all(self, items: list[int]) -> int:
        out = EPS
        for t in reversed(items):
            out = self.cat(t, out)
        return out

    def alt(self, items: list[int]) -> int:
        flat: list[int] = []
        seen: set[int] = set()
        for t in items:
            for u in self.data[t] if self.kind[t] == K_ALT else (t,):
                if u == EMPTY or u in seen:
                    continue  # a later duplicate alternative is dominated by the earlier one
                if flat and self.kind[u] == K_BYTES and self.kind[flat[-1]] == K_BYTES:
                    u = self.byteset(self.data[flat[-1]][0] | self.data[u][0])
                    seen.discard(flat.pop())
                seen.add(u)
                flat.append(u)
        if not flat:
            return EMPTY
        if len(flat) == 1:
            return flat[0]
        return self._mk(K_ALT, tuple(flat), None)

    def rep(self, r: int, lo: int, hi: int | None, greedy: bool = True) -> int:
        if hi is not None and hi < lo:
            return EMPTY
        if hi == 0:
            return EPS
        if r == EMPTY:
            return EPS if lo == 0 else EMPTY
        if r == EPS:
            return EPS
        if lo == 1 and hi == 1:
            return r
        return self._mk(K_REP, (r, lo, hi, greedy), True if lo == 0 else None)

    def lazy(self, text: str, parser, start: int, end: int) -> int:
        """A group body parsed on first use (`parser.parse_segment(start, end)`), keyed by its text."""
        tid = self._mk(K_LAZY, (text,), None)
        self._lazy.setdefault(tid, (parser, start, end))
        return tid

    def call(self, token: str) -> int:
        """The term of a call token `(?&N)`, intersection `(?&N&M...)` or complement operand `(?&N&~M)`."""
        refs = [
            self.negation(self.ref(int(x[1:]))) if x.startswith("~") else self.ref(int(x))
            for x in token[3:-1].split("&")
        ]
        return refs[0] if len(refs) == 1 else self.both(refs)

    def negation(self, t: int) -> int:
        """The complement of `t` among all byte strings (its derivatives are the complements of `t`'s)."""
        if self.kind[t] == K_NOT:
            return self.data[t][0]
        self.has_intersections = True
        return self._mk(K_NOT, (t,), None)

    def both(self, terms: list[int]) -> int:
        """The intersection of `terms` (flattened, deduplicated, sorted: one term per set of operands)."""
        flat: set[int] = set()
        for t in terms:
            if t == EMPTY:
                return EMPTY
            flat.update(self.data[t] if self.kind[t] == K_AND else (t,))
        if len(flat) == 1:
            return flat.pop()
        self.has_intersections = True
        return self._mk(K_AND, tuple(sorted(flat)), None)

    def ref(self, rule: int) -> int:
        """A call of rule `rule`."""
        if not 0 <= rule < len(self.rules):
            raise RegexUnsupported(f"call of an undefined rule {rule}")
        return self._mk(K_REF, (rule,), None)

    def rule_term(self, rule: int) -> int:
        """The term of rule `rule`'s fragment (parsed on first use)."""
        term = self._rule_terms.get(rule)
        if term is None:
            if self._force is not None:
                self._write(rule)
            term = self._rule_terms[rule] = parse_regex(self.rules[rule], self)
        return term

    def _write(self, rule: int) -> None:
        """Have a pending rule written; the rules it adds may recurse (never endlessly: `LazyGrammar`)."""
        try:
            self._force(rule)
        except SchemaError as exc:  # a size or time budget: this grammar cannot grow further
            raise RegexUnsupported(f"a deferred sub-schema cannot be compiled: {exc}") from exc
        self.may_recurse_endlessly = bool(self.recursive - self.promised)

    def productive(self, t: int) -> bool:
        """Whether some finite byte string matches `t` (false only through unproductive recursive rules).
        Cached; alternatives short-circuit, so only the rules on required paths are parsed."""
        res = self._productive.get(t)
        if res is None:
            res = True
            for part in self._spine(t, self._productive):
                if self.kind[part] == K_CAT:  # a suffix already known
                    res = self._productive[part]
                    break
                kind, data = self.kind[part], self.data[part]
                if kind == K_ALT:
                    ok = any(self.productive(u) for u in data)
                elif kind == K_REP:
                    ok = data[1] == 0 or self.productive(data[0])
                elif kind == K_LAZY:
                    ok = self.productive(self.force(part))
                elif kind == K_REF:
                    rule = data[0]
                    if rule in self.promised:
                        ok = True
                    elif rule in self.recursive:
                        ok = self.shortest(part) is not None
                    else:
                        ok = self.productive(self.rule_term(rule))
                elif kind in (K_AND, K_NOT):
                    ok = self._nonempty(part)
                else:
                    ok = kind != K_EMPTY
                if not ok:
                    res = False
                    break
            self._productive[t] = res
        return res

    def _nonempty(self, t: int) -> bool:
        """Whether some byte string matches `t` (an intersection or complement). A short depth-first walk
        of its derivatives first (`QUICK_DEPTH_FIRST` terms: a `maxLength: 12` string that must hold a hex
        digit is shown non-empty in ~12 steps, where going wide visits every byte class at every length),
        then a breadth-first one (a short completion is found without going deep), then, past
        `BREADTH_FIRST` terms, a depth-first one without that bound (a long one, `minLength: 3000`, is
        found without going wide). They share what they learn in `_productive`: the terms on the path to a
        match are productive, and when a walk is exhausted every term it visited is not (it saw all they
        reach)."""
        known = self._productive
        if t not in known:
            found = True if self.nullable(t) else self._depth_first(t, QUICK_DEPTH_FIRST)
            if found is None:
                found = self._breadth_first(t)
            known[t] = self._depth_first(t) if found is None else found
        return known[t]

    def _breadth_first(self, t: int) -> bool | None:
        known = self._productive
        parent: dict[int, int | None] = {t: None}
        queue = deque([t])
        goal = t if self.nullable(t) else None
        while queue and goal is None:
            if len(parent) > BREADTH_FIRST:
                return None
            node = queue.popleft()
            for k in self._successors(node):
                if k in parent or known.get(k) is False:
                    continue
                parent[k] = node
                if known.get(k) or self.nullable(k):
                    goal = k
                    break
                queue.append(k)
        if goal is None:
            known.update(dict.fromkeys(parent, False))
            return False
        while goal is not None:
            known[goal] = True
            goal = parent[goal]
        return True

    def _depth_first(self, t: int, limit: int | None = None) -> bool | None:
        """None when `limit` terms were visited without an answer (nothing is recorded then)."""
        known = self._productive
        visited = {t}
        stack = [(t, iter(self._successors(t)))]
        found = False
        while stack and not found:
            for k in stack[-1][1]:
                if k in visited or known.get(k) is False:
                    continue
                if known.get(k) or self.nullable(k):
                    found = True
                    break
                visited.add(k)
                if limit is not None and len(visited) > limit:
                    return None
                if (
                    len(visited) > SEARCH_LIMIT
                ):  # a tighter bound refused satisfiable oneOf-of-patterns schemas
                    raise RegexUnsupported(f"intersection too large to search ({SEARCH_LIMIT} states)")
                stack.append((k, iter(self._successors(k))))
                break
            else:
                stack.pop()
        if found:
            known.update((node, True) for node, _ in stack)
        else:
            known.update(dict.fromkeys(visited, False))
        return found

    def within(self, t: int, horizon: int) -> int:
        """A term that accepts the same prefixes of at most `horizon` bytes as `t` does (both can still
        complete after them): bounded repeats at the head of `t` whose bounds cannot be reached in `horizon`
        bytes lose them. A state's token mask depends only on prefixes as long as the longest token, so the
        positions of a long `maxLength` string share one mask."""
        kind, data = self.kind[t], self.data[t]
        if kind == K_REP:
            r, lo, hi, greedy = data
            if self.nullable(r):
                return t  # iterations need not consume a byte: the counter may move without input
            far = horizon + 2  # more iterations than `horizon` bytes can complete (each takes >= 1 byte)
            return self.rep(r, min(lo, far), None if hi is None or hi >= far else hi, greedy)
        if kind == K_AND:
            return self.both([self.within(u, horizon) for u in data])
        if kind in (K_LAZY, K_REF):  # a group or a rule: its repeats count too (unchanged: `t` itself)
            term = self.parsed(t)
            near = self.within(term, horizon) if term != t else t
            return t if near == term else near
        if kind != K_CAT:
            return t
        head, rest = data
        return self.cat(self.within(head, horizon), rest)

    def parsed(self, t: int) -> int:
        """The term `t` stands for: an unparsed group's body (`K_LAZY`), a non-recursive rule's term (a call
        `K_REF`, the operands of an intersection), else `t` itself."""
        while True:
            if self.kind[t] == K_LAZY:
                t = self.force(t)
            elif self.kind[t] == K_REF and self.data[t][0] not in self.recursive:
                t = self.rule_term(self.data[t][0])
            else:
                return t

    def content_bounds(self, t: int) -> tuple[int | None, int]:
        """How many JSON-string content characters in a row thread `t` takes: `(exact, upper)`. `exact` is set
        when `t` takes any string of up to that many (and no more): `t` is `r{lo,hi} rest`, `r` exactly one
        content character (escapes may be allowed too) and `rest` cannot start with one, or it is such a
        repeat intersected with others; `upper` bounds what `t` takes in any case (`UNBOUNDED` when
        unknown). A thread too long to be a state's mask shortcut has `(None, UNBOUNDED)`."""
        kind, data = self.kind[t], self.data[t]
        head, rest = data if kind == K_CAT else (t, EPS)
        if self.first_bytes(rest) & _content_first_bytes():
            return None, UNBOUNDED
        head = self.parsed(head)
        if self.kind[head] == K_REP:
            bound = self._repeat_bound(head)
            return (None, UNBOUNDED) if bound is None else (bound[1], bound[1])
        if self.kind[head] != K_AND:
            return None, UNBOUNDED
        operands = [self.parsed(u) for u in self.data[head]]
        bounds = [self._repeat_bound(u) if self.kind[u] == K_REP else None for u in operands]
        known = [b for b in bounds if b is not None]
        upper = min((hi for _, hi in known), default=UNBOUNDED)
        if len(known) < len(bounds) or max(lo for lo, _ in known) > upper:
            return None, upper
        return upper, upper

    def content_head(self, t: int) -> int | None:
        """The items of `t` before its first one that must start with a non-content byte (a closing quote),
        as one term; None when there is no such item or nothing before it."""
        head: list[int] = []
        for item in self._spine(t):
            if not self.nullable(item) and not self.first_bytes(item) & _content_first_bytes():
                return self.cat_all(head) if head else None
            head.append(item)
        return None

    def content_universal(self, heads: tuple[int, ...]) -> bool:
        """Whether every string of JSON-string content characters is a prefix of a string of one of `heads`
        (sorted terms; an open object's additional key takes any name but the declared ones). True at once
        when a head calls an `open_content` rule; else explores the derivatives by whole characters (sets of
        live threads), at most `UNIVERSAL_LIMIT` of them; when it succeeds every set it saw is universal too,
        so the key positions of an object share one walk."""
        if any(self.kind[h] == K_REF and self.data[h][0] in self.open_content for h in heads):
            return True  # the compiler's promise: no need to explore the rule
        res = self._universal.get(heads)
        if res is None:
            seen = self._universal_closure(heads)
            res = seen is not None
            self._universal.update(dict.fromkeys(seen or (heads,), res))
        return res

    def _universal_closure(self, start: tuple[int, ...]) -> set[tuple[int, ...]] | None:
        seen, todo = {start}, [start]
        while todo:
            if len(seen) > UNIVERSAL_LIMIT:
                return None
            threads = todo.pop()
            for seq in _content_steps():
                cur = {threads}
                for want in seq:
                    nxt = set()
                    for ts in cur:
                        succ = self._char_step(ts, want)
                        if succ is None:
                            return None
                        nxt.update(succ)
                    cur = nxt
                for ts in cur:
                    if ts not in seen and not self._universal.get(ts):
                        seen.add(ts)
                        todo.append(ts)
        return seen

    def _char_step(self, threads: tuple[int, ...], want: int) -> list[tuple[int, ...]] | None:
        """The live thread sets every byte of `want` leads `threads` to; None when some byte dies. Cached."""
        key = (threads, want)
        if key not in self._steps:
            self._steps[key] = self._compute_char_step(threads, want)
        return self._steps[key]

    def _compute_char_step(self, threads: tuple[int, ...], want: int) -> list[tuple[int, ...]] | None:
        items = [it for u in threads for it in self.lf(u) if it is not None and it[0] & want]
        covered = 0
        for m, _ in items:
            covered |= m
        if covered & want != want:
            return None
        out = []
        for block in _blocks([m & want for m, _ in items], want):
            rep = _lowest_byte(block)
            succ = tuple(
                sorted({k for m, k in items if (m >> rep) & 1 and not self.depth[k] and self.productive(k)})
            )
            if not succ:
                return None
            out.append(succ)
        return out

    def _repeat_bound(self, t: int) -> tuple[int, int] | None:
        """`(lo, hi)` of a repeat of one content character (`hi` UNBOUNDED when open); None otherwise."""
        r, lo, hi, _ = self.data[t]
        if not self._is_content_char(r):
            return None
        return lo, UNBOUNDED if hi is None else hi

    def first_bytes(self, t: int) -> int:
        """The mask of the bytes a string matching `t` may start with."""
        mask = 0
        for it in self.lf(t):
            if it is not None:
                mask |= it[0]
        return mask

    def _is_content_char(self, r: int) -> bool:
        """Whether every JSON-string content character, and nothing shorter, takes `r` to the empty string."""
        res = self._content_char.get(r)
        if res is None:
            res = all(self._takes_to_eps(r, seq) for seq in _string_content_sequences())
            self._content_char[r] = res
        return res

    def _takes_to_eps(self, r: int, seq: list[tuple[int, int]]) -> bool:
        cur = {r}
        for lo, hi in seq:
            want, nxt = _range_mask(lo, hi), set()
            for t in cur:
                covered = 0
                for it in self.lf(t):
                    if it is None:
                        return False  # matched part of a character
                    if it[0] & want:
                        if it[0] & want != want:
                            return False  # the range parts ways
                        covered |= want
                        nxt.add(it[1])
                if covered != want:
                    return False
            cur = nxt
        return cur == {EPS}

    def _successors(self, t: int) -> list[int]:
        return list(dict.fromkeys(it[1] for it in self.lf(t) if it is not None))

    def shortest(self, t: int) -> bytes | None:
        """The smallest of the shortest byte strings matching `t` (None: none). Cached; for concatenations,
        smallest-shortest(a b) = smallest-shortest(a) + smallest-shortest(b)."""
        if t in self._shortest:
            return self._shortest[t]
        chain = []  # the concatenation's uncached suffixes, outermost first (iterative: chains are long)
        u = t
        while u not in self._shortest and self.kind[u] == K_CAT:
            chain.append(u)
            u = self.data[u][1]
        if u not in self._shortest:
            self._shortest[u] = self._shortest_item(u)
        tail = self._shortest[u]
        for whole in reversed(chain):
            if tail is not None:
                head = self._shortest_item(self.data[whole][0])
                tail = None if head is None else head + tail
            self._shortest[whole] = tail
        return tail

    def _shortest_item(self, t: int) -> bytes | None:
        kind, data = self.kind[t], self.data[t]
        if kind == K_BYTES:
            mask = data[0]
            return bytes([(mask & -mask).bit_length() - 1])
        if kind == K_ALT:
            return _best(self.shortest(u) for u in data)
        if kind == K_REP:
            one = self.shortest(data[0])
            return b"" if data[1] == 0 else None if one is None else one * data[1]
        if kind == K_LAZY:
            return self.shortest(self.force(t))
        if kind == K_REF:
            rule = data[0]
            if rule not in self.recursive:
                return self.shortest(self.rule_term(rule))
            if rule not in self._rule_shortest:
                self._solve(rule)
            return self._rule_shortest[rule]
        if kind in (K_AND, K_NOT):
            return self._search(t)
        return None if kind == K_EMPTY else b""  # K_EPS, K_RET

    def _spine(self, t: int, known: dict | None = None):
        """The items of a right-nested concatenation (`t` itself when it is not one); with `known`, stops at
        the first proper suffix in it and yields that suffix (a K_CAT term) last."""
        while self.kind[t] == K_CAT:
            a, t = self.data[t]
            yield a
            if known is not None and t in known and self.kind[t] == K_CAT:
                yield t
                return
        yield t

    def _solve(self, start: int) -> None:
        """Smallest-shortest strings of every rule reachable from `start` and not solved yet: iterate from
        "no string" until nothing improves (values only improve, so this terminates)."""
        rules, todo = {start}, [start]
        while todo:
            for q in self._calls(self.rule_term(todo.pop())):
                if q not in rules and q not in self._rule_shortest:
                    rules.add(q)
                    todo.append(q)
        value: dict[int, bytes | None] = dict.fromkeys(rules)
        changed = True
        while changed:
            changed = False
            memo: dict[int, bytes | None] = {}
            for r in rules:
                got = self._evaluate(self.rule_term(r), value, memo)
                if got is not None and (value[r] is None or _key(got) < _key(value[r])):
                    value[r] = got
                    changed = True
        self._rule_shortest.update(value)

    def _evaluate(self, t: int, value: dict[int, bytes | None], memo: dict) -> bytes | None:
        """Smallest-shortest string of `t` with the rules being solved taken from `value`."""
        if t in self._shortest:
            return self._shortest[t]
        if t in memo:
            return memo[t]
        out = b""
        for part in self._spine(t):
            kind, data = self.kind[part], self.data[part]
            if kind == K_ALT:
                got = _best(self._evaluate(u, value, memo) for u in data)
            elif kind == K_REP:
                one = None if data[1] == 0 else self._evaluate(data[0], value, memo)
                got = b"" if data[1] == 0 else None if one is None else one * data[1]
            elif kind == K_LAZY:
                got = self._evaluate(self.force(part), value, memo)
            elif kind == K_REF and data[0] in value:
                got = value[data[0]]
            else:
                got = self.shortest(part)
            if got is None:
                out = None
                break
            out += got
        memo[t] = out
        return out

    def _calls(self, t: int) -> set[int]:
        """Rules called anywhere inside `t`."""
        out: set[int] = set()
        seen, todo = {t}, [t]
        while todo:
            u = todo.pop()
            kind, data = self.kind[u], self.data[u]
            if kind == K_REF:
                out.add(data[0])
                continue
            if kind == K_LAZY:
                kids: tuple = (self.force(u),)
            elif kind in (K_CAT, K_ALT, K_AND, K_NOT):
                kids = data
            elif kind == K_REP:
                kids = (data[0],)
            else:
                continue
            for k in kids:
                if k not in seen:
                    seen.add(k)
                    todo.append(k)
        return out

    def force(self, t: int) -> int:
        res = self._forced.get(t)
        if res is None:
            parser, start, end = self._lazy[t]
            res = parser.parse_segment(start, end)
            self._forced[t] = res
        return res

    def nullable(self, t: int) -> bool:
        res = self._nullable[t]
        if res is None:
            kind, data = self.kind[t], self.data[t]
            if kind == K_CAT:
                res = self.nullable(data[0]) and self.nullable(data[1])
            elif kind == K_ALT:
                res = any(self.nullable(u) for u in data)
            elif kind == K_AND:
                res = all(self.nullable(u) for u in data)
            elif kind == K_NOT:
                res = not self.nullable(data[0])
            elif kind == K_REP:
                res = data[1] == 0 or self.nullable(data[0])
            elif kind == K_REF:
                rule = data[0]
                res = (
                    self.shortest(t) == b"" if rule in self.recursive else self.nullable(self.rule_term(rule))
                )
            else:  # K_LAZY
                res = self.nullable(self.force(t))
            self._nullable[t] = res
        return res

    def char_class(self, ranges: tuple[tuple[int, int], ...]) -> int:
        """Term for one character among `ranges` (normalized codepoint ranges), as UTF-8 byte sequences."""
        tid = self._class_cache.get(ranges)
        if tid is None and ranges and ranges[-1][1] < 0x80:  # ASCII (ranges are sorted): one byte set
            mask = 0
            for lo, hi in ranges:
                mask |= _range_mask(lo, hi)
            tid = self._class_cache[ranges] = self.byteset(mask)
        if tid is None:
            seqs = []
            for lo, hi in ranges:
                for seq in utf8_sequences(lo, hi):
                    seqs.append(self.cat_all([self.byteset(_range_mask(a, b)) for a, b in seq]))
            tid = self.alt(seqs)
            self._class_cache[ranges] = tid
        return tid

    # Ordered linear form: tuple of items; an item is None (MATCH) or (byte mask, continuation term).
    def lf(self, t: int) -> tuple:
        res = self._lf.get(t)
        if res is None:
            res = self._compute_lf(t)
            self._lf[t] = res
        return res

    def _compute_lf(self, t: int) -> tuple:
        kind = self.kind[t]
        if kind == K_EMPTY:
            return ()
        if kind == K_EPS:
            return (None,)
        if kind == K_BYTES:
            return ((self.data[t][0], EPS),)
        if kind == K_CAT:
            return self._cat_lf(t)
        if kind == K_ALT:  # a loop, not a generator: each level of nested groups costs no C stack
            out = []
            for u in self.data[t]:
                out.extend(self.lf(u))
            return _dedupe(out)
        if kind == K_LAZY:
            return self.lf(self.force(t))
        if kind == K_RET:
            return (None,)
        if kind == K_AND:
            return self._product_lf(t)
        if kind == K_NOT:
            return self._complement_lf(t)
        if kind == K_REF:
            return self._call_lf(t)
        r, lo, hi, greedy = self.data[t]
        if lo > 0:
            rest = self.rep(r, lo - 1, None if hi is None else hi - 1, greedy)
            return self._lf_then(self.lf(r), rest)
        if hi is None:  # r*: (r+)? in regex-automata; r's own MATCH (empty iteration) keeps its place
            body = [None if it is None else (it[0], self.cat(it[1], t)) for it in self.lf(r)]
        else:  # r{0,m} = (r r{0,m-1})?
            rest = self.rep(r, 0, hi - 1, greedy)
            body = list(self._lf_then(self.lf(r), rest))
        return _dedupe(body + [None]) if greedy else _dedupe([None, *body])

    def _product_lf(self, t: int) -> tuple:
        """Linear form of an intersection: a match when every operand matches; a byte step when every
        operand can take the byte, continuing with the intersection of their continuations."""
        items: tuple = self.lf(self.data[t][0])
        for operand in self.data[t][1:]:
            other = self.lf(operand)
            out = []
            for a in items:
                for b in other:
                    if a is None or b is None:
                        if a is None and b is None:
                            out.append(None)
                    elif a[0] & b[0]:
                        out.append((a[0] & b[0], self.both([a[1], b[1]])))
            items = _dedupe(out)
        return items

    def _union(self, terms) -> int:
        """The alternation of `terms` in a canonical form (nested alternatives flattened, sorted, distinct):
        the same set of continuations is always the same term, so a complement's derivatives stay finite."""
        flat: set[int] = set()
        for t in terms:
            flat.update(self.data[t] if self.kind[t] == K_ALT else (t,))
        return self.alt(sorted(flat))

    def _complement_lf(self, t: int) -> tuple:
        """Linear form of a complement: per block of bytes the operand's items do not separate, the
        complement of the union of their continuations (of nothing, Σ*, for bytes the operand refuses);
        a match where the operand has none."""
        inner = self.data[t][0]
        items = [it for it in self.lf(inner) if it is not None]
        out: list = []
        for block in _blocks([m for m, _ in items], ALL_BYTES):  # a block no item takes: the complement of ∅
            rep = _lowest_byte(block)
            out.append((block, self.negation(self._union(k for m, k in items if (m >> rep) & 1))))
        if not self.nullable(inner):
            out.append(None)
        return tuple(out)

    def _search(self, t: int) -> bytes | None:
        """Smallest-shortest string of `t` by breadth-first search over its derivatives, bytes ascending
        (for intersections, whose strings do not follow from their parts')."""
        start = (t,)
        parents: dict[tuple[int, ...], tuple | None] = {start: None}
        queue = deque([start])
        while queue:
            threads = queue.popleft()
            if any(self.nullable(k) for k in threads):
                path = bytearray()
                step = parents[threads]
                while step is not None:
                    threads, byte = step
                    path.append(byte)
                    step = parents[threads]
                return bytes(reversed(path))
            if len(parents) > SEARCH_LIMIT:
                raise RegexUnsupported(f"intersection too large to search ({SEARCH_LIMIT} states)")
            items = _dedupe(it for k in threads for it in self.lf(k) if it is not None)
            if not items:
                continue
            for first in sorted(_block_minima(frozenset(m for m, _ in items))):
                nxt = tuple(dict.fromkeys(k for m, k in items if (m >> first) & 1))
                if nxt not in parents:
                    parents[nxt] = (threads, first)
                    queue.append(nxt)
        return None

    def _call_lf(self, t: int) -> tuple:
        """Linear form of a call: the rule's, with a RET marker after each continuation when recursive."""
        rule = self.data[t][0]
        if t in self._open:
            raise RegexUnsupported(f"rule {rule} is left-recursive (calls itself before consuming input)")
        self._open.add(t)
        try:
            items = self.lf(self.rule_term(rule))
        finally:
            self._open.discard(t)
        if rule not in self.recursive:
            return items
        if not self.productive(t):
            return ()
        return tuple(None if it is None else (it[0], self.cat(it[1], RET)) for it in items)

    def _cat_lf(self, t: int) -> tuple:
        """Linear form of a right-nested concatenation a1 (a2 (a3 ...)), walked as a loop: a long run of
        nullable items (an object's optional properties) would otherwise recurse once per item. Equal to
        `_lf_then(lf(a1), rest)` applied down the chain: each item's MATCH is replaced, in place, by the
        linear form of what follows it."""
        out: list = []
        after: list[list] = []  # per nullable item: its items that come after its MATCH
        rest = t
        while self.kind[rest] == K_CAT:
            a, b = self.data[rest]
            items = self.lf(a)
            if None not in items:
                out.extend((it[0], self.cat(it[1], b)) for it in items)
                break
            cut = items.index(None)
            out.extend((it[0], self.cat(it[1], b)) for it in items[:cut])
            after.append([None if it is None else (it[0], self.cat(it[1], b)) for it in items[cut + 1 :]])
            rest = b
        else:
            out.extend(self.lf(rest))
        for items in reversed(after):
            for it in items:
                if it is None:
                    continue  # a second MATCH: the first one already stands for the continuation
                out.append(it)
        return _dedupe(out)

    def _lf_then(self, items: tuple, b: int) -> tuple:
        out = []
        for it in items:
            if it is None:
                out.extend(self.lf(b))
            else:
                out.append((it[0], self.cat(it[1], b)))
        return _dedupe(out)


def _key(text: bytes) -> tuple[int, bytes]:
    return len(text), text


def _best(candidates) -> bytes | None:
    """The smallest of the shortest candidates (None entries: no string)."""
    found = [c for c in candidates if c is not None]
    return min(found, key=_key) if found else None


def _dedupe(items) -> tuple:
    seen = set()
    out = []
    for it in items:
        if it not in seen:
            seen.add(it)
            out.append(it)
    return tuple(out)


@cache
def _range_mask(a: int, b: int) -> int:
    return ((1 << (b + 1)) - 1) ^ ((1 << a) - 1)


# ----------------------------------------------------------------------------------------------- parser

_ANY_BUT_NL = _normalize([(0, 9), (11, MAX_CODEPOINT)])


_EMPTY_SOURCES = re.compile(r"\[\^\\s\\S\]|\(\?&[0-9]+&")  # the empty class; an intersection call


def _may_be_empty(grammar: RuleGrammar | LazyGrammar) -> bool:
    """Whether some term of `grammar` may match nothing: only through recursion (but in the rules promised
    `productive`), an intersection or a complement, or the empty class (every other regex construct matches
    some string). For all other grammars the check of the root's productivity, which parses every rule on
    a required path, is skipped."""
    if grammar.recursive - grammar.productive:
        return True
    return _EMPTY_SOURCES.search("\n".join((grammar.root, *grammar.rules))) is not None


def parse_regex(regex: str, store: TermStore) -> int:
    """Parse `regex` (Rust regex syntax subset) into a term of `store`."""
    if len(regex) > 2000:  # long regexes: parse group bodies only when the automaton reaches them
        term = LazyParser.try_parse(regex, store)
        if term is not None:
            return term
    try:
        return parse_fast(regex, store)
    except _Unsupported:
        pass  # Python's parser either handles it or gives the precise error
    try:
        tree = sre_parse.parse(regex, 0)
    except (re.error, OverflowError, RecursionError) as exc:
        raise RegexUnsupported(f"cannot parse regex: {exc}") from exc
    if tree.state.flags & ~C.SRE_FLAG_UNICODE:
        raise RegexUnsupported("inline flags are not supported")
    return _convert(tree, store)


def _class_ranges(items) -> tuple[tuple[int, int], ...]:
    negate = False
    ranges: list[tuple[int, int]] = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            ranges.append((av, av))
        elif op is C.RANGE:
            ranges.append(av)
        elif op is C.CATEGORY:
            ranges.extend(_category(av))
        else:
            raise RegexUnsupported(f"unsupported class item {op}")
    norm = _normalize(ranges)
    return _complement(norm) if negate else norm


def _convert(sub, store: TermStore) -> int:
    parts: list[int] = []
    for op, av in sub.data if hasattr(sub, "data") else sub:
        if op is C.LITERAL:
            parts.append(store.char_class(((av, av),)))
        elif op is C.NOT_LITERAL:
            parts.append(store.char_class(_complement(_normalize([(av, av)]))))
        elif op is C.ANY:
            parts.append(store.char_class(_ANY_BUT_NL))
        elif op is C.IN:
            parts.append(store.char_class(_class_ranges(av)))
        elif op is C.BRANCH:
            parts.append(store.alt([_convert(b, store) for b in av[1]]))
        elif op is C.SUBPATTERN:
            _group, add_flags, del_flags, p = av
            if add_flags & ~C.SRE_FLAG_UNICODE or del_flags:
                raise RegexUnsupported("inline flags are not supported")
            parts.append(_convert(p, store))
        elif op is C.MAX_REPEAT or op is C.MIN_REPEAT:
            lo, hi, p = av
            parts.append(
                store.rep(_convert(p, store), lo, None if hi is C.MAXREPEAT else hi, op is C.MAX_REPEAT)
            )
        else:
            raise RegexUnsupported(f"unsupported regex construct {op}")
    return store.cat_all(parts)


# ----------------------------------------------------------------------------------------------- DFA


class LazyDFA:
    """Byte DFA whose rows are computed on first visit. States are small ints; DEAD (-1) is the dead state.

    `grammar` is a regex, a `grammars.ir.RuleGrammar` or a `LazyGrammar` (a pending rule is written when a
    derivative first reaches it). `trans[s, b]` is valid only where `known[s]`; `final[s]` is valid for
    every interned state. Mutations happen under `lock`; readers of known rows need
    no lock. Every live state can reach an accepting one.
    """

    def __init__(self, grammar: str | RuleGrammar | LazyGrammar, *, max_states: int = 200_000) -> None:
        if isinstance(grammar, str):
            grammar = RuleGrammar.of_regex(grammar)
        self.grammar = grammar
        self.stack_limit = grammar.stack_limit
        force = grammar.force if isinstance(grammar, LazyGrammar) else None
        self.store = TermStore(
            grammar.rules, grammar.recursive, grammar.open_content, grammar.productive, force
        )
        with deep_recursion(DEEP_FRAMES):
            self.root = parse_regex(grammar.root, self.store)
            if _may_be_empty(grammar) and not self.store.productive(self.root):
                raise RegexUnsupported(
                    "the grammar admits no output (an empty language, or recursion that never ends)"
                )
        self.max_states = max_states
        self.lock = threading.RLock()
        self._ids: dict[tuple[int, ...], int] = {}
        self._states: list[tuple[int, ...]] = []
        self.rows: list[list[int] | None] = []
        cap = 64
        self.trans = np.full((cap, 256), DEAD, dtype=np.int32)
        self.known = np.zeros(cap, dtype=np.uint8)
        self.final = np.zeros(cap, dtype=np.uint8)
        self._content_next: dict[int, int | None] = {}
        with deep_recursion(DEEP_FRAMES):
            self.initial = self._state((self.root,)) if self.root != EMPTY else DEAD

    @property
    def num_states(self) -> int:
        return len(self._states)

    def _state(self, threads: tuple[int, ...]) -> int:
        sid = self._ids.get(threads)
        if sid is None:
            sid = len(self._states)
            if sid >= self.max_states:
                raise RegexUnsupported(f"automaton exceeds {self.max_states} states")
            if sid >= len(self.known):
                self._grow()
            self._ids[threads] = sid
            self._states.append(threads)
            self.rows.append(None)
            self.final[sid] = any(self.store.nullable(t) for t in threads)
        return sid

    def _grow(self) -> None:
        cap = 2 * len(self.known)
        trans = np.full((cap, 256), DEAD, dtype=np.int32)
        trans[: len(self.trans)] = self.trans
        known = np.zeros(cap, dtype=np.uint8)
        known[: len(self.known)] = self.known
        final = np.zeros(cap, dtype=np.uint8)
        final[: len(self.final)] = self.final
        self.trans, self.known, self.final = trans, known, final

    def is_final(self, state: int) -> bool:
        return state >= 0 and bool(self.final[state])

    def completion(self, state: int) -> bytes:
        """The smallest of the shortest byte strings leading from `state` to an accepting state (computed on
        the grammar, not by searching the automaton: a recursive grammar's automaton is unbounded)."""
        with self.lock, deep_recursion(DEEP_FRAMES):
            found = _best(self.store.shortest(t) for t in self._states[state])
        if found is None:
            raise RegexUnsupported("no accepting state is reachable: the constraint cannot be completed")
        return found

    def accepts(self, text: str | bytes) -> bool:
        """Whether `text` (UTF-8) is a word of the language (builds the rows it walks through)."""
        state = self.initial
        for byte in text.encode() if isinstance(text, str) else text:
            if state == DEAD:
                return False
            state = self.row(state)[byte]
        return self.is_final(state)

    def row(self, state: int) -> list[int]:
        row = self.rows[state]
        if row is None:
            with self.lock, deep_recursion(DEEP_FRAMES):
                row = self.rows[state]
                if row is None:
                    row = self._expand(state)
        return row

    def mask_state(self, state: int, horizon: int) -> int:
        """A state whose token mask equals `state`'s for tokens of at most `horizon` bytes (see
        `TermStore.within`): `state` itself unless a repeat at the head of a thread is far from its bounds."""
        with self.lock, deep_recursion(DEEP_FRAMES):
            threads = self._states[state]
            store = self.store
            normal = tuple(dict.fromkeys(store.within(t, horizon) for t in threads))
            return state if normal == threads else self._state(normal)

    def content_run(self, state: int, limit: int) -> int | None:
        """How many JSON-string content characters (see `STRING_CONTENT`) any string of them may have from
        `state` on, capped at `limit`: `n` when the states after 0, 1, ... `n` - 1 such characters each send
        every one of them to a single live next state, and the `n`-th character (if `n` < `limit`) to DEAD.
        None when the characters part ways or some die earlier than others (then only a walk can tell)."""
        with self.lock, deep_recursion(DEEP_FRAMES):
            return self._content_run(state, limit)

    def _content_run(self, state: int, limit: int) -> int | None:
        bounds = [self.store.content_bounds(t) for t in self._states[state]]
        exact = max((e for e, _ in bounds if e is not None), default=None)
        if exact is not None and all(e is not None or upper <= exact for e, upper in bounds):
            return min(exact, limit)  # one thread takes `exact` characters, none takes more
        heads = [self.store.content_head(t) for t in self._states[state]]
        live = tuple(sorted({h for h in heads if h is not None}))
        # every thread bounded: a longer content string is no prefix of theirs, so not universal
        bounded = all(upper < UNBOUNDED for _, upper in bounds)
        if live and not bounded and self.store.content_universal(live):
            return limit  # some thread takes any content prefix: every content token is allowed
        run = 0
        while run < limit:
            nxt = self._content_step(state)
            if nxt is None:
                return None
            if nxt == DEAD:
                break
            if nxt == state:  # loops: any number of characters
                return limit
            state = nxt
            run += 1
        return run

    def _content_step(self, state: int) -> int | None:
        """The state every content character leads to from `state` (DEAD when each dies at its first byte),
        or None when they do not all agree. Cached per state."""
        res = self._content_next.get(state)
        if res is None and state not in self._content_next:
            res = self._check_content_step(state)
            self._content_next[state] = res
        return res

    def _check_content_step(self, state: int) -> int | None:
        row = self.row(state)
        target = row[0x61]
        if row[0x20] != target:  # cheap pre-check: two ASCII content bytes disagree
            return None
        if target == DEAD:
            firsts = {r for seq in _string_content_sequences() for r in row[seq[0][0] : seq[0][1] + 1]}
            return DEAD if firsts == {DEAD} else None
        for seq in _string_content_sequences():
            cur = {state}
            for lo, hi in seq:
                nxt = set()
                for st in cur:
                    nxt.update(self.row(st)[lo : hi + 1])
                if DEAD in nxt:
                    return None
                cur = nxt
            if cur != {target}:
                return None
        return target

    def expand_many(self, states) -> None:
        with self.lock, deep_recursion(DEEP_FRAMES):
            for s in states:
                if self.rows[s] is None:
                    self._expand(s)

    def _expand(self, state: int) -> list[int]:
        store = self.store
        items = []
        seen = set()
        for t in self._states[state]:
            for it in store.lf(t):
                if it is not None and it not in seen:  # None marks a MATCH; every thread goes on
                    seen.add(it)
                    items.append(it)
        row_arr = np.full(256, DEAD, dtype=np.int32)
        if items:
            masks = frozenset(m for m, _ in items)
            blocks = _partition(masks)
            # continuations past the stack limit, or that cannot finish (possible only through recursion)
            depth, limit = store.depth, self.stack_limit
            dropped = {k for _, k in items if depth[k] > limit}
            if store.may_recurse_endlessly or store.has_intersections:
                dropped.update(k for _, k in items if k not in dropped and not store.productive(k))
            for rep, sel in blocks:
                nxt = []
                got = set(dropped)
                for m, k in items:
                    if (m >> rep) & 1 and k not in got:
                        got.add(k)
                        nxt.append(k)
                if nxt:
                    row_arr[sel] = self._state(tuple(nxt))
        row = row_arr.tolist()
        self.trans[state] = row_arr
        self.rows[state] = row
        self.known[state] = 1
        return row


# JSON-string content characters: everything but `"`, `\\`, C0 and C1 controls (0x00-0x1F, 0x7F-0x9F).
STRING_CONTENT = ((0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7E), (0xA0, 0x10FFFF))


@cache
def _string_content_sequences() -> list[list[tuple[int, int]]]:
    return [seq for lo, hi in _normalize(list(STRING_CONTENT)) for seq in utf8_sequences(lo, hi)]


@cache
def _content_first_bytes() -> int:
    mask = 0
    for seq in _string_content_sequences():
        mask |= _range_mask(*seq[0])
    return mask


@cache
def _content_steps() -> list[list[int]]:
    """`_string_content_sequences` as byte masks, the one-byte characters merged into one step."""
    ascii_ = 0
    out = []
    for seq in _string_content_sequences():
        if len(seq) == 1:
            ascii_ |= _range_mask(*seq[0])
        else:
            out.append([_range_mask(lo, hi) for lo, hi in seq])
    return [[ascii_], *out]


def _blocks(masks, universe: int) -> list[int]:
    """The blocks of bytes of `universe` that no mask separates."""
    blocks = [universe]
    for m in masks:
        nb = []
        for b in blocks:
            x, y = b & m, b & ~m
            if x:
                nb.append(x)
            if y:
                nb.append(y)
        blocks = nb
    return blocks


def _lowest_byte(block: int) -> int:
    """The smallest byte of a byte mask (its block's representative)."""
    return (block & -block).bit_length() - 1


def _covered_blocks(masks) -> list[int]:
    """The blocks of the bytes the masks cover that no mask separates."""
    covered = 0
    for m in masks:
        covered |= m
    return _blocks(masks, covered)


def _block_minima(masks: frozenset[int]) -> list[int]:
    """The smallest byte of each block of bytes that no mask separates."""
    return [_lowest_byte(b) for b in _covered_blocks(masks)]


@lru_cache(maxsize=1 << 14)
def _partition(masks: frozenset[int]) -> tuple[tuple[int, np.ndarray], ...]:
    """Blocks of bytes that no mask separates: (representative byte, boolean selector over 256 bytes).
    Cached across grammars (every JSON grammar splits the bytes the same few ways); read-only."""
    out = []
    for b in _covered_blocks(masks):
        rep = _lowest_byte(b)
        sel = np.unpackbits(np.frombuffer(b.to_bytes(32, "little"), dtype=np.uint8), bitorder="little")
        sel = sel.astype(bool)
        sel.flags.writeable = False
        out.append((rep, sel))
    return tuple(out)


# At the end: the parser uses this module's Unicode tables (imported lazily there), this module its parser.
from constrained.token_index.parser import LazyParser, _Unsupported, parse_fast  # noqa: E402
