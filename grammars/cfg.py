"""Context-free grammars, the common form of the grammar front ends (Lark, GBNF), lowered to the IR.

Contract: a :class:`Cfg` maps rule names to expressions over regex fragments (:class:`Frag`, already in the
IR's regex syntax, with their nullability), rule references (:class:`Ref`), sequences, alternations and
repeats; ``root`` is the expression of the whole output. :func:`lower` returns the language of ``root`` as a
:class:`grammars.ir.RuleGrammar` (wrapped in a ``CompiledSchema`` with one explain entry per rule):

- only rules reachable from ``root`` are kept; a reference to an undefined rule is an error naming it;
- immediate left recursion is rewritten, ``a: a x | a y | z`` to ``a: z (x | y)*`` (same language);
- any other left recursion (``a: b x``, ``b: a y``; or ``a: c? a x``) raises :class:`GrammarSyntaxError`
  naming the rule and the cycle: the automaton would need to expand the rule forever;
- rules that call themselves, directly or through others, are the IR's ``recursive`` rules; an output holds
  at most ``stack_limit`` open recursive calls (the one restriction: a subset of the language, never more).

Every error is a :class:`grammars.errors.GrammarSyntaxError`; the language is never changed silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import GrammarSyntaxError
from .ir import DEFAULT_STACK_LIMIT, NOTHING, RuleGrammar, call
from .json_schema import CompiledSchema, ExplainEntry
from .regex import alt, repeat, seq


@dataclass(frozen=True)
class Frag:
    """A regex fragment (a terminal); ``nullable`` when it matches the empty string."""

    regex: str
    nullable: bool


@dataclass(frozen=True)
class Ref:
    """A call of the rule ``name``."""

    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Alt:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Rep:
    """``item`` repeated ``lo`` to ``hi`` times (``hi`` None: unbounded)."""

    item: Expr
    lo: int
    hi: int | None


Expr = Frag | Ref | Seq | Alt | Rep
EMPTY = Seq(())


@dataclass
class Cfg:
    """Rules by name, the root expression, and how each rule is named in messages (default "rule 'x'")."""

    rules: dict[str, Expr]
    root: Expr
    labels: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # extra explain text per rule
    stack_limit: int = DEFAULT_STACK_LIMIT

    def label(self, name: str) -> str:
        return self.labels.get(name, f"rule '{name}'")


# ------------------------------------------------------------------------------------------ traversal
def refs(expr: Expr) -> Iterator[str]:
    """Names of the rules ``expr`` calls, in order (repeats included)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Ref):
            yield e.name
        elif isinstance(e, Seq | Alt):
            stack.extend(reversed(e.items))
        elif isinstance(e, Rep):
            stack.append(e.item)


def _reachable(cfg: Cfg) -> list[str]:
    """Rules reachable from the root, in first-visit order; GrammarSyntaxError for an undefined one."""
    order: list[str] = []
    seen: set[str] = set()
    pending = [(name, None) for name in refs(cfg.root)]
    while pending:
        name, caller = pending.pop(0)
        if name in seen:
            continue
        if name not in cfg.rules:
            where = cfg.label(caller) if caller else None
            raise GrammarSyntaxError(f"'{name}' is not defined", "undefined symbol", where)
        seen.add(name)
        order.append(name)
        pending.extend((callee, name) for callee in refs(cfg.rules[name]))
    return order


def _nullable(expr: Expr, rules: dict[str, bool]) -> bool:
    if isinstance(expr, Frag):
        return expr.nullable
    if isinstance(expr, Ref):
        return rules.get(expr.name, False)
    if isinstance(expr, Seq):
        return all(_nullable(e, rules) for e in expr.items)
    if isinstance(expr, Alt):
        return any(_nullable(e, rules) for e in expr.items)
    return expr.lo == 0 or _nullable(expr.item, rules)


def nullable_rules(rules: dict[str, Expr]) -> dict[str, bool]:
    """Which rules derive the empty string (least fixpoint)."""
    known = dict.fromkeys(rules, False)
    changed = True
    while changed:
        changed = False
        for name, body in rules.items():
            if not known[name] and _nullable(body, known):
                known[name] = changed = True
    return known


def left_calls(expr: Expr, nullable: dict[str, bool]) -> set[str]:
    """Rules ``expr`` may call before consuming any input."""
    if isinstance(expr, Ref):
        return {expr.name}
    if isinstance(expr, Alt):
        return set().union(*(left_calls(e, nullable) for e in expr.items))
    if isinstance(expr, Rep):
        return left_calls(expr.item, nullable) if expr.hi != 0 else set()
    if isinstance(expr, Seq):
        out: set[str] = set()
        for item in expr.items:
            out |= left_calls(item, nullable)
            if not _nullable(item, nullable):
                break
        return out
    return set()


# ------------------------------------------------------------------------------------------ left recursion
def _tail(alternative: Expr, name: str) -> Expr | None:
    """``x`` when ``alternative`` is ``name x`` (``name`` alone: the empty sequence), else None."""
    if alternative == Ref(name):
        return EMPTY
    if isinstance(alternative, Seq) and alternative.items and alternative.items[0] == Ref(name):
        return Seq(alternative.items[1:])
    return None


def rewrite_immediate(name: str, body: Expr, label: str) -> Expr | None:
    """``a: a x | a y | z`` as ``a: z (x | y)*``; None when no alternative starts with the rule itself."""
    alternatives = body.items if isinstance(body, Alt) else (body,)
    tails = [t for t in (_tail(a, name) for a in alternatives) if t is not None]
    if not tails:
        return None
    bases = [a for a in alternatives if _tail(a, name) is None]
    if not bases:
        raise GrammarSyntaxError(
            f"left recursion without a base case: every alternative starts with '{name}', so it never "
            "derives a finite string",
            "left recursion",
            label,
        )
    base = bases[0] if len(bases) == 1 else Alt(tuple(bases))
    loop = tails[0] if len(tails) == 1 else Alt(tuple(tails))
    return Seq((base, Rep(loop, 0, None)))


def _left_cycle(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path ``start -> ... -> start`` in ``graph`` (breadth first: a shortest one), or None."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for callee in sorted(graph.get(node, ())):
                if callee == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if callee not in parent:
                    parent[callee] = node
                    nxt.append(callee)
        frontier = nxt
    return None


def _check_left_recursion(cfg: Cfg, names: list[str], bodies: dict[str, Expr]) -> None:
    nullable = nullable_rules(bodies)
    graph = {name: left_calls(bodies[name], nullable) for name in names}
    for name in names:
        cycle = _left_cycle(name, graph)
        if cycle is not None:
            raise GrammarSyntaxError(
                f"left recursion {' -> '.join(cycle)}: the rule can reach itself before consuming input; "
                f"only immediate left recursion (`{name}: {name} x | y`, rewritten to `{name}: y x*`) is "
                "supported",
                "left recursion",
                cfg.label(name),
            )


# ------------------------------------------------------------------------------------------ recursion
def _recursive(names: list[str], bodies: dict[str, Expr]) -> set[str]:
    """Rules on a call cycle (Tarjan's strongly connected components, iteratively)."""
    graph = {n: [c for c in dict.fromkeys(refs(bodies[n])) if c in bodies] for n in names}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[str] = set()
    for root in names:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    out.update(component)
    return out


# ------------------------------------------------------------------------------------------ lowering
def emit(expr: Expr, ids: dict[str, int]) -> str:
    """The IR fragment of ``expr`` (rule references become calls ``(?&N)``)."""
    if isinstance(expr, Frag):
        return expr.regex
    if isinstance(expr, Ref):
        return call(ids[expr.name])
    if isinstance(expr, Seq):
        return seq([emit(e, ids) for e in expr.items])
    if isinstance(expr, Alt):
        return alt(emit(e, ids) for e in expr.items) if expr.items else NOTHING
    return repeat(emit(expr.item, ids), expr.lo, expr.hi)


def lower(cfg: Cfg) -> CompiledSchema:
    """The IR grammar of ``cfg`` (see the module docstring), with one explain entry per kept rule."""
    try:
        return _lower(cfg)
    except RecursionError:
        raise GrammarSyntaxError("the grammar nests too deep to compile", "nesting") from None


def _lower(cfg: Cfg) -> CompiledSchema:
    names = _reachable(cfg)
    bodies: dict[str, Expr] = {}
    rewritten: set[str] = set()
    for name in names:
        new = rewrite_immediate(name, cfg.rules[name], cfg.label(name))
        bodies[name] = cfg.rules[name] if new is None else new
        if new is not None:
            rewritten.add(name)
    _check_left_recursion(cfg, names, bodies)
    recursive = _recursive(names, bodies)
    ids = {name: i for i, name in enumerate(names)}
    grammar = RuleGrammar(
        emit(cfg.root, ids),
        tuple(emit(bodies[name], ids) for name in names),
        frozenset(ids[name] for name in recursive),
        cfg.stack_limit,
    )
    explain = tuple(_explain(cfg, name, name in recursive, name in rewritten) for name in names)
    return CompiledSchema(grammar, explain)


def _explain(cfg: Cfg, name: str, recursive: bool, rewritten: bool) -> ExplainEntry:
    notes = list(cfg.notes.get(name, ()))
    if recursive:
        notes.append("recursive")
    if rewritten:
        notes.append("left recursion rewritten")
    return ExplainEntry(cfg.label(name), tuple(notes) or ("exact",))


def alternatives(items: Iterable[Expr]) -> Expr:
    """One expression for a list of alternatives (a single one stays as it is)."""
    items = tuple(items)
    return items[0] if len(items) == 1 else Alt(items)


def sequence(items: Iterable[Expr]) -> Expr:
    """One expression for a sequence (a single item stays as it is)."""
    items = tuple(items)
    return items[0] if len(items) == 1 else Seq(items)
