"""The lazy token index against two oracles, along seeded random walks.

- The regex's LANGUAGE (`regex` module partial full-matching): a token is allowed iff the text so far plus the
  token is a prefix of a word; a state is final iff the text is a word.
- outlines-core's `Index`, bit for bit, on JSON-schema regexes (no prefix-overlapping alternatives: there its
  leftmost-first determinisation and the language agree), through the `TokenIndex` adapter of
  `tests/outlines_reference.py`.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import regex as language
from outlines_core.json_schema import build_regex_from_schema

from constrained.bitmask import pack_token_ids
from constrained.token_index import (
    ByteAutomaton,
    LazyTokenIndex,
    RegexUnsupported,
    TokenIndex,
    TokenVocabulary,
)
from constrained.token_index.automaton import utf8_sequences
from constrained.tokenizer_info import TokenizerInfo
from tests.outlines_reference import OutlinesReferenceIndex

SCHEMAS = {
    "small": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "person": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 999},
            "email": {"type": "string", "maxLength": 12},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "role": {"enum": ["admin", "user", "administrator"]},
        },
        "required": ["id", "role"],
        "additionalProperties": False,
    },
}

TRICKY = [
    "(?:a{1,3}b){2,5}",
    "a|abc",
    "(?:abc|a)d?",
    "(?:ab|a)(?:bc|c)?",
    "(?:foo|foobar|fo)+baz",
    "(?:a|)*c",
    "(?:x?y?){3}z",
    "a*b",
    ".{1,4}\n.",
    "(?:\n|.){0,5}",
    '"(?:[^"\\\\\\x00-\\x1f]|\\\\["\\\\/bfnrt])*"',
    '"(?:[^"\\\\]|\\\\.)*"',
    '[^"\\\\\\x00-\\x1f]{2,4}',
    "[α-ω]+é?",
    "[^a-zé]*x",
    "[\u0800-\uffff]{1,3}",
    "[\U00010000-\U0010ffff]x|[\u00e0-\u00ff]{2}",
    "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
    "\\d{2,3}\\s*[a-f0-9]{2}",
    "(?:null|nul|true|tr)(?:, ?(?:null|true)){0,3}",
    '\\{ ?"(?:a|ab|abc)" ?: ?(?:[0-9]{1,3}|"[^"]{0,3}") ?\\}',
    '"[^"\\\\\\x00-\\x1f\\x7f-\\x9f]{0,60}"',  # a counter longer than any token: one mask for many
    '"[^"\\\\\\x00-\\x1f\\x7f-\\x9f]{3,8}"x',  # content tokens answered by their length
    '"(?:[^"\\\\]|\\\\.){2,40}"',  # a content class that also takes escapes
]


def _synthetic_tokens() -> list[bytes]:
    """~2.5k tokens: every byte, JSON/regex fragments, multi-byte chars and their split pieces."""
    rng = random.Random(1234)
    toks = {bytes([b]) for b in range(256)}
    chars = list('abcdefxyz{}[]":, \n\\/0123456789-.eE+tnrulsb') + ["é", "α", "ω", "ж", "中", "😀", "\u0800"]
    pieces = [c.encode() for c in chars]
    for c in ["é", "α", "中", "😀", "\u0800", "\uffff"]:
        data = c.encode()
        toks.update(data[:i] for i in range(1, len(data)))
        toks.update(data[i:] for i in range(1, len(data)))
    words = ["name", "age", "true", "null", "false", "admin", "administrator", "user", "foo", "foobar", "baz"]
    words += ['{"', '":', '","', '"}', '", "', "\\n", '\\"', "abc", "ab", "nul", "tr", "role", "id", "tags"]
    toks.update(w.encode() for w in words)
    toks.update(('"' + w + '"').encode() for w in words)
    while len(toks) < 2500:
        toks.add(b"".join(rng.choice(pieces) for _ in range(rng.randint(2, 5))))
    return sorted(toks)


@pytest.fixture(scope="module")
def synthetic() -> TokenizerInfo:
    table = _synthetic_tokens()
    eos = len(table)
    table += [b"", b"<special>"]
    return TokenizerInfo(
        tuple(table), frozenset({eos}), frozenset({eos, eos + 1}), len(table) + 3, "synthetic"
    )


def assert_parity(regex: str, info: TokenizerInfo, *, walks: int = 12, steps: int = 40, seed: int = 0) -> int:
    """Walk outlines-core and the lazy index with the same random allowed tokens; compare every mask."""
    ref = OutlinesReferenceIndex(regex, info)
    mine = LazyTokenIndex(regex, TokenVocabulary.from_info(info))
    rng = random.Random(seed)
    checked = 0
    for _ in range(walks):
        a, b = ref.get_initial_state(), mine.get_initial_state()
        for step in range(steps):
            expected = ref.get_allowed_tokens(a)  # EOS excluded
            got = mine.get_allowed_tokens(b).tolist()
            if expected != got:
                extra = [info.token_bytes[t] for t in sorted(set(got) - set(expected))][:10]
                missing = [info.token_bytes[t] for t in sorted(set(expected) - set(got))][:10]
                raise AssertionError(f"{regex!r} step {step}: extra {extra} missing {missing}")
            assert np.array_equal(mine.allowed_mask(b), pack_token_ids(np.asarray(got), info.vocab_size))
            assert np.array_equal(mine.allowed_mask(b), ref.allowed_mask(a))
            assert ref.is_final_state(a) == mine.is_final_state(b), (regex, step)
            checked += 1
            # a disallowed token is refused by both
            bad = rng.randrange(info.vocab_size)
            if bad not in expected:
                assert mine.get_next_state(b, bad) is None
            if not expected:
                break
            token = rng.choice(expected)
            a, b = ref.get_next_state(a, token), mine.get_next_state(b, token)
            assert b is not None
    return checked


def _decodes(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def assert_language(
    regex: str, info: TokenizerInfo, *, walks: int = 4, steps: int = 15, seed: int = 0
) -> int:
    """Walk the lazy index with random allowed tokens; every mask equals the language oracle's, wherever the
    text plus the token is complete UTF-8 (tokens that split a character are checked by the walk itself)."""
    pattern = language.compile(regex)
    index = LazyTokenIndex(regex, TokenVocabulary.from_info(info))
    candidates = [
        (tid, data)
        for tid, data in enumerate(info.token_bytes)
        if data and tid not in info.special_ids and tid not in info.eos_token_ids
    ]
    rng = random.Random(seed)
    checked = 0
    for _ in range(walks):
        state, text = index.get_initial_state(), b""
        for step in range(steps):
            got = set(index.get_allowed_tokens(state).tolist())
            for tid, data in candidates:
                whole = _decodes(text + data)
                if whole is None:
                    continue
                expected = pattern.fullmatch(whole, partial=True) is not None
                assert (tid in got) == expected, (regex, step, text, data, expected)
            whole = _decodes(text)
            if whole is not None:
                assert index.is_final_state(state) == (pattern.fullmatch(whole) is not None), (regex, text)
            checked += 1
            if not got:
                break
            token = rng.choice(sorted(got))
            text += info.token_bytes[token]
            state = index.get_next_state(state, token)
            assert state is not None
    return checked


@pytest.mark.parametrize("regex", TRICKY)
def test_language_tricky_synthetic(regex: str, synthetic: TokenizerInfo) -> None:
    assert assert_language(regex, synthetic) > 4


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_parity_outlines_schema_regex_synthetic(name: str, synthetic: TokenizerInfo) -> None:
    assert_parity(build_regex_from_schema(json.dumps(SCHEMAS[name])), synthetic, walks=20)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_parity_grammars_schema_regex_synthetic(name: str, synthetic: TokenizerInfo) -> None:
    grammars = pytest.importorskip("grammars")
    grammar = grammars.compile_json_schema(SCHEMAS[name]).grammar
    if grammar.recursive:
        pytest.skip("recursive grammar (untyped values): no regex form for outlines-core")
    assert_parity(grammar.to_regex(), synthetic, walks=20)


@pytest.fixture(scope="module")
def smollm2(tokenizer) -> TokenizerInfo:
    return TokenizerInfo.from_huggingface(tokenizer)


@pytest.mark.parametrize(
    "regex",
    [
        build_regex_from_schema(json.dumps(SCHEMAS["small"])),
        '"(?:[^"\\\\\\x00-\\x1f]|\\\\["\\\\/bfnrt])*"',
        "[α-ω中]{1,3}(?:\n|.)x",
    ],
)
def test_parity_smollm2(regex: str, smollm2: TokenizerInfo) -> None:
    assert_parity(regex, smollm2, walks=6, steps=30)


@pytest.mark.parametrize(
    "regex", ["(?:a{1,3}b){2,5}|(?:foo|foobar)+", "-?(?:[0-9]|[1-9][0-9]{1,14})(?:\\.[0-9]+)?"]
)
def test_language_smollm2(regex: str, smollm2: TokenizerInfo) -> None:
    assert assert_language(regex, smollm2, walks=2, steps=6) > 2


def test_utf8_sequences_cover_exactly() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lo = rng.randrange(0x110000)
        hi = min(0x10FFFF, lo + rng.choice([0, 5, 300, 70000]))
        seqs = utf8_sequences(lo, hi)
        for cp in [lo, hi, (lo + hi) // 2, lo - 1, hi + 1]:
            if not 0 <= cp <= 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                continue
            data = chr(cp).encode()
            hit = any(
                len(s) == len(data) and all(a <= x <= b for (a, b), x in zip(s, data, strict=True))
                for s in seqs
            )
            assert hit == (lo <= cp <= hi), (lo, hi, cp)


def test_lazy_and_shared(synthetic: TokenizerInfo) -> None:
    vocab = TokenVocabulary.from_info(synthetic)
    assert TokenVocabulary.from_info(synthetic) is vocab
    index = LazyTokenIndex("(?:[a-z]{1,200}){1,200}x", vocab)  # nested bounded repeats: no up-front DFA
    assert index.num_states == 1
    state = index.get_initial_state()
    mask = index.allowed_mask(state)
    assert index.allowed_mask(state) is mask and not mask.flags.writeable
    assert index.num_states < 50


def test_unsupported_regex(synthetic: TokenizerInfo) -> None:
    vocab = TokenVocabulary.from_info(synthetic)
    for regex in ["^a", "a(?=b)", "(a)\\1", "(?i)a"]:
        with pytest.raises(RegexUnsupported):
            LazyTokenIndex(regex, vocab)


def test_lazy_index_is_a_token_index(synthetic: TokenizerInfo) -> None:
    """`LazyTokenIndex` satisfies the `TokenIndex` protocol, byte automaton included; the reference adapter
    satisfies it without one."""
    index: TokenIndex = LazyTokenIndex("a|abc", TokenVocabulary.from_info(synthetic))
    assert isinstance(index, TokenIndex) and isinstance(index.dfa, ByteAutomaton)
    reference: TokenIndex = OutlinesReferenceIndex("a|abc", synthetic)
    assert isinstance(reference, TokenIndex) and reference.dfa is None


def test_grammar_over_the_reference_index_agrees(synthetic: TokenizerInfo) -> None:
    """A `Grammar` over outlines-core's index (plugged in as a `TokenIndex`) fills the same masks and takes
    the same tokens as the compiler's lazy one."""
    import torch

    from constrained.bitmask import allocate_bitmask
    from constrained.grammar import Grammar, GrammarCompiler, GrammarError

    lazy = GrammarCompiler(synthetic)
    with pytest.raises(GrammarError):
        lazy.compile_regex("a(?=b)")
    rng = random.Random(7)
    for regex in ['\\{ ?"(?:a|ab|abc)" ?: ?(?:[0-9]{1,3}|"[^"]{0,3}") ?\\}', "(?:a{1,3}c){2,5}d"]:
        mine = lazy.compile_regex(regex)
        ref = Grammar(OutlinesReferenceIndex(mine.source.to_regex(), synthetic), synthetic, mine.source, 0.0)
        assert ref.closing is None and ref.min_tokens() == 0 and ref.forced_bytes(ref.initial_state) == b""
        m1, m2 = mine.matcher(), ref.matcher()
        b1, b2 = allocate_bitmask(1, synthetic.vocab_size), allocate_bitmask(1, synthetic.vocab_size)
        for _ in range(30):
            m1.fill_bitmask(b1, 0)
            m2.fill_bitmask(b2, 0)
            assert torch.equal(b1, b2)
            assert m1.can_terminate() == m2.can_terminate()
            bits = np.unpackbits(b1[0].numpy().view(np.uint8), bitorder="little")[: synthetic.vocab_size]
            token = rng.choice(np.flatnonzero(bits).tolist())
            assert m1.accept_token(token) and m2.accept_token(token)
            if m1.is_terminated():
                break


def test_threads_share_one_index(synthetic: TokenizerInfo) -> None:
    from concurrent.futures import ThreadPoolExecutor

    regex = build_regex_from_schema(json.dumps(SCHEMAS["person"]))
    vocab = TokenVocabulary.from_info(synthetic)

    def walk(index: LazyTokenIndex, seed: int) -> list[list[int]]:
        rng = random.Random(seed)
        state, seen = index.get_initial_state(), []
        for _ in range(40):
            allowed = index.get_allowed_tokens(state).tolist()
            seen.append(allowed)
            if not allowed:
                break
            state = index.get_next_state(state, rng.choice(allowed))
        return seen

    shared = LazyTokenIndex(regex, vocab)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda seed: walk(shared, seed), range(16)))
    assert results == [walk(LazyTokenIndex(regex, vocab), seed) for seed in range(16)]


SHORTCUT_SCHEMAS = [
    {"type": "string", "maxLength": 300},
    {"type": "string", "minLength": 5, "maxLength": 9},
    {"type": "string", "minLength": 12, "maxLength": 12, "pattern": "[0-9a-f]+"},
    {"type": "string", "maxLength": 40, "pattern": "^[a-z ]*$"},
    {
        "type": "object",
        "properties": {
            "a": {"type": "string", "maxLength": 200},
            "b": {"type": ["string", "null"], "maxLength": 7},
        },
        "required": ["a"],
    },
    {  # an open object: an additional key may be any name but the declared ones
        "type": "object",
        "properties": {name: {"type": "integer"} for name in ("ab", "abc", "b", "name", "nam", "x\u00e9")},
    },
]


@pytest.mark.parametrize("vocabulary", ["synthetic", "smollm2"])
@pytest.mark.parametrize("case", range(len(SHORTCUT_SCHEMAS)))
def test_mask_shortcuts_match_the_rows(case: int, vocabulary: str, request) -> None:
    """Masks answered without a full trie walk (a counter far from its bounds shares a mask; content tokens
    taken by their length, or all allowed where some thread takes any content prefix) equal the tokens whose
    bytes the automaton's rows keep alive."""
    grammars = pytest.importorskip("grammars")
    info = request.getfixturevalue(vocabulary)
    vocab = TokenVocabulary.from_info(info)
    index = LazyTokenIndex(grammars.compile_json_schema(SHORTCUT_SCHEMAS[case]).grammar, vocab)
    ids = [t for t, data in enumerate(vocab.token_bytes) if data is not None]
    rng = random.Random(case)
    shortcuts = 0
    for _ in range(3):
        state = index.get_initial_state()
        for _ in range(25):
            got = index.get_allowed_tokens(state).tolist()
            assert got == [t for t in ids if index.get_next_state(state, t) is not None]
            same = index.dfa.mask_state(state, vocab.max_token_len)
            shortcuts += same != state or index.dfa.content_run(same, vocab.max_token_len) is not None
            if not got:
                break
            state = index.get_next_state(state, rng.choice(got))
    assert shortcuts


@pytest.mark.parametrize(
    "schema",
    [
        SHORTCUT_SCHEMAS[-1],
        {"type": "object", "properties": {"": {}, "a": {}, "\u00e9\u4e2d": {}, 'a"b': {}}},
        {"type": "string", "not": {"enum": ["x", "xy", "\U0001f600"]}},
    ],
)
def test_open_content_rules_keep_their_promise(schema: dict) -> None:
    """Every rule the compiler marks `open_content` takes every JSON-string content string as a prefix: the
    automaton's own exploration (the one the mark lets it skip) proves it rule by rule."""
    grammars = pytest.importorskip("grammars")
    from constrained.token_index.automaton import TermStore

    grammar = grammars.compile_json_schema(schema).grammar
    assert grammar.open_content
    store = TermStore(grammar.rules, grammar.recursive)  # no marks: the closure decides
    for rule in grammar.open_content:
        assert store._universal_closure((store.ref(rule),)) is not None, grammar.rules[rule]


def test_counter_masks_at_every_position() -> None:
    """Through a `maxLength` string one character at a time: each position's mask is exact, also where the
    remaining length is about the longest token (the horizon of the shared masks)."""
    grammars = pytest.importorskip("grammars")
    table = [bytes([b]) for b in range(256)] + [b"a" * n for n in (3, 9, 10)]
    table += [b'aaaaaaaa"', b"a\\n", "é".encode()]
    info = TokenizerInfo(tuple(table), frozenset(), frozenset(), len(table), "counter")
    vocab = TokenVocabulary.from_info(info)
    assert vocab.max_token_len == 10
    for schema in ({"type": "string", "maxLength": 30}, {"type": "string", "minLength": 14, "maxLength": 25}):
        index = LazyTokenIndex(grammars.compile_json_schema(schema).grammar, vocab)
        state = index.get_next_state(index.get_initial_state(), ord('"'))
        for _ in range(schema["maxLength"] + 1):
            got = index.get_allowed_tokens(state).tolist()
            assert got == [t for t in range(len(table)) if index.get_next_state(state, t) is not None]
            state = index.get_next_state(state, ord("a"))
            if state is None:
                break


@pytest.mark.parametrize(
    ("plain", "negated"),
    [("[a-c]{0,4}", "a.*"), ("[a-c]*", "(?:ab|c)+"), ("[a-c]{1,3}", "[^b]*b[^b]*"), ("(?:a|bc)*", "a*")],
)
def test_complement_operand_is_exact(plain: str, negated: str) -> None:
    """`(?&N&~M)`: exactly the strings of N that M does not match (every string over a-c up to length 5)."""
    from itertools import product

    from constrained.token_index.automaton import LazyDFA
    from grammars.ir import RuleGrammar, intersection

    dfa = LazyDFA(RuleGrammar(intersection([0], [1]), (plain, negated)))
    for n in range(6):
        for chars in product("abc", repeat=n):
            text = "".join(chars)
            expected = (
                language.fullmatch(plain, text) is not None and language.fullmatch(negated, text) is None
            )
            assert dfa.accepts(text) == expected, (plain, negated, text)


def test_term_budget_bounds_hostile_intersections(monkeypatch) -> None:
    """Nested complements of patterns (MaskBench's allany17) grew one automaton to >12 GB while checking the
    language is not empty: interned terms are budgeted (`MAX_TERMS`), so it fails cleanly instead."""
    grammars = pytest.importorskip("grammars")
    from constrained.token_index import automaton

    def none_of(*patterns: str) -> dict:
        return {"not": {"allOf": [{"pattern": p} for p in patterns]}}

    schema = {
        "type": "string",
        "allOf": [
            {"not": {"anyOf": [none_of("^.{60}$", "ab1", "b12"), none_of("^\\w*$", "\\d\\d", "[ab]")]}},
            {"not": {"anyOf": [none_of("^\\w+", "1.*2", "ac"), none_of("^\\w+", "1.*2", "a2")]}},
            {"pattern": "[aA][12].*[zZ]"},
        ],
    }
    grammar = grammars.compile_json_schema(schema).grammar
    monkeypatch.setattr(automaton, "MAX_TERMS", 20_000)
    with pytest.raises(RegexUnsupported, match="exceeds 20000 terms"):
        dfa = automaton.LazyDFA(grammar)
        dfa.completion(dfa.initial)


def test_a_worn_grammar_is_compiled_afresh(synthetic: TokenizerInfo) -> None:
    """The automaton budget bounds what one request builds: a cached grammar past half its budget is
    replaced for the next request (those using it keep it), instead of failing every later one."""
    from constrained.grammar import GrammarCompiler

    compiler = GrammarCompiler(synthetic, max_states=40)
    first = compiler.compile_regex("[a-z]{0,60}")
    assert compiler.compile_regex("[a-z]{0,60}") is first and first.index.budget_used() < 0.5
    a, b = (synthetic.token_bytes.index(c) for c in (b"a", b"b"))
    matcher = first.matcher()
    assert matcher.accept_tokens([a] * 25)
    assert first.index.budget_used() > 0.5
    again = compiler.compile_regex("[a-z]{0,60}")
    assert again is not first and again.index.budget_used() < 0.5
    assert matcher.accept_token(b)  # the running sequence goes on with its own automaton
