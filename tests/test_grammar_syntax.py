"""Lark and GBNF grammars through the same core: languages checked against `lark` (the reference parser).

For a JSON grammar, an arithmetic grammar (parentheses nested 20 deep), a small SQL `SELECT` subset and a CSV
grammar, in Lark syntax: strings generated from our automaton (random walks over distinct next states, closed
by the shortest completion) all parse with `lark.Lark(same_text, parser="earley")`, and hand-written invalid
strings are refused by both. The GBNF versions of the same grammars have the same language (each accepts the
other's generated strings, and refuses the same invalid ones). Then: left recursion (immediate rewritten,
other rejected naming the rule), what is rejected and why, the API, the CLI, HF `generate` and the server.
"""

from __future__ import annotations

import random
import re

import httpx
import lark
import pytest

from bench.grammar_cases import ARITH_GBNF, ARITH_LARK, GRAMMARS, JSON_LARK, SQL_LARK, walk
from constrained.api import Compiler
from constrained.token_index import LazyDFA
from grammars import GrammarSyntaxError
from grammars.gbnf import compile_gbnf
from grammars.lark_grammar import compile_lark, translate_lark
from grammars.pyregex import translate
from tests.conftest import TEST_MODEL_ID

WALKS = 8


def samples(dfa: LazyDFA, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [walk(dfa, rng, rng.randint(0, 60)) for _ in range(WALKS)]


@pytest.fixture(scope="module")
def compiled() -> dict[str, tuple[lark.Lark, LazyDFA, LazyDFA]]:
    """Per grammar: lark's Earley parser, our automaton of the Lark text, our automaton of the GBNF text."""
    out = {}
    for name, (lark_text, gbnf_text, _valid, _invalid) in GRAMMARS.items():
        parser = lark.Lark(lark_text, parser="earley")
        out[name] = (parser, LazyDFA(compile_lark(lark_text)), LazyDFA(compile_gbnf(gbnf_text)))
    return out


def parses(parser: lark.Lark, text: str) -> bool:
    try:
        parser.parse(text)
    except lark.exceptions.LarkError:
        return False
    return True


# ------------------------------------------------------------------------------------------ languages
@pytest.mark.parametrize("name", GRAMMARS)
def test_generated_strings_parse_with_lark(compiled, name):
    parser, dfa, _ = compiled[name]
    for text in samples(dfa, seed=len(name)):
        assert dfa.accepts(text)
        assert parses(parser, text), f"{name}: lark refuses {text!r}"


@pytest.mark.parametrize("name", GRAMMARS)
def test_hand_written_strings(compiled, name):
    parser, dfa, gbnf = compiled[name]
    _lark, _gbnf, valid, invalid = GRAMMARS[name]
    for text in valid:
        assert parses(parser, text), text
        assert dfa.accepts(text), f"{name}: refused {text!r}"
        assert gbnf.accepts(text), f"{name} (GBNF): refused {text!r}"
    for text in invalid:
        assert not parses(parser, text), text
        assert not dfa.accepts(text), f"{name}: accepted {text!r}"
        assert not gbnf.accepts(text), f"{name} (GBNF): accepted {text!r}"


@pytest.mark.parametrize("name", GRAMMARS)
def test_gbnf_and_lark_versions_have_the_same_language(compiled, name):
    parser, from_lark, from_gbnf = compiled[name]
    for text in samples(from_lark, seed=7):
        assert from_gbnf.accepts(text), f"{name}: GBNF refuses {text!r} (generated from the Lark grammar)"
    for text in samples(from_gbnf, seed=11):
        assert from_lark.accepts(text), f"{name}: Lark grammar refuses {text!r} (generated from the GBNF)"
        assert parses(parser, text), f"{name}: lark refuses {text!r}"


def test_parentheses_nested_20_deep(compiled):
    parser, dfa, gbnf = compiled["arith"]
    rng = random.Random(3)
    for _ in range(4):
        text = walk(dfa, rng, rng.randint(0, 20), prefix=b"(" * 20)
        assert text.count("(") >= 20 and gbnf.accepts(text)
        assert parses(parser, text), text


def test_case_insensitive_terminals_are_exact():
    """Flags and classes follow Python's `re` exactly (so lark and we agree), checked over the whole BMP."""
    word = translate("(?i:select)", "test")
    assert re.fullmatch(word, "\u017fElEct") and not re.fullmatch(word, "selec")
    for pattern in ["(?i:[a-k])", "(?i:[^a-z0-9])", "(?i:k)", r"(?i:\w)", r"[\d\s]", "(?s:.)", "."]:
        fragment = translate(pattern, "test")
        for cp in range(0x10000):
            if not 0xD800 <= cp <= 0xDFFF:
                ch = chr(cp)
                assert bool(re.fullmatch(pattern, ch)) == bool(re.fullmatch(fragment, ch)), (pattern, hex(cp))


# ------------------------------------------------------------------------------------------ left recursion
def test_immediate_left_recursion_is_rewritten():
    compiled = translate_lark('start: expr\nexpr: expr "+" term | term\nterm: /[0-9]/\n')
    dfa = LazyDFA(compiled.grammar)
    assert dfa.accepts("1+2+3") and dfa.accepts("4") and not dfa.accepts("1+") and not dfa.accepts("+1")
    assert any("left recursion rewritten" in e.enforced for e in compiled.explain)
    gbnf = LazyDFA(compile_gbnf('root ::= expr\nexpr ::= expr "+" term | term\nterm ::= [0-9]\n'))
    assert gbnf.accepts("1+2+3") and not gbnf.accepts("1+")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ('start: a\na: b "x" | "y"\nb: a "z" | "w"\n', "rule 'a'"),
        ('start: a\na: c a "x" | "y"\nc: "q"?\n', "rule 'a'"),
        ('start: a\na: a "x"\n', "rule 'a'"),
    ],
)
def test_other_left_recursion_is_rejected_naming_the_rule(text, rule):
    with pytest.raises(GrammarSyntaxError) as info:
        compile_lark(text)
    assert info.value.construct == "left recursion" and info.value.where == rule, str(info.value)
    gbnf = re.sub(r"^(\w+):", r"\1 ::=", text.replace("start:", "root:"), flags=re.M)
    with pytest.raises(GrammarSyntaxError) as info:
        compile_gbnf(gbnf)
    assert info.value.construct == "left recursion" and info.value.where == rule, str(info.value)


# ------------------------------------------------------------------------------------------ rejections
@pytest.mark.parametrize(
    ("text", "construct", "where"),
    [
        ('start: "a" B\nB: /(?<!x)b/\n', "assert_not", "terminal 'B'"),
        ('start: C\nC: "/*" /(.|\\n)*?/ "*/"\n', "min_repeat", "terminal 'C'"),
        ("start: A\nA: /^a/\n", "at", "terminal 'A'"),
        ("start: A\nA: /(a)\\1/\n", "groupref", "terminal 'A'"),
        ("start: A\nA: /(?a:\\w)/\n", "flag 'a'", "terminal 'A'"),
        ("start: A\n%declare A\n", "%declare", "terminal 'A'"),
        ("start: A\n%import .other.A\n", "%import", None),
        ("start: a\na: b\n", "syntax", None),
        ("root ::= 'a'", "syntax", None),
        ('begin: "a"\n', "start", None),
    ],
)
def test_unenforceable_lark_is_rejected(text, construct, where):
    with pytest.raises(GrammarSyntaxError) as info:
        compile_lark(text)
    assert info.value.construct == construct, str(info.value)
    assert info.value.where == where, str(info.value)


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ('root ::= "a" <[1234]>', "token reference"),
        ("root ::= missing", "undefined symbol"),
        ('root ::= "a"\nroot ::= "b"', "duplicate rule"),
        ('start ::= "a"', "root"),
        ('root ::= "\\q"', "escape"),
        ('root ::= "\\uD800"', "escape"),
        ('root ::= ("a"', "syntax"),
        ('root ::= "a"{3,1}', "syntax"),
        ("root ::= [a-", "syntax"),
    ],
)
def test_malformed_gbnf_is_rejected(text, construct):
    with pytest.raises(GrammarSyntaxError) as info:
        compile_gbnf(text)
    assert info.value.construct == construct, str(info.value)


def test_escaped_string_is_compiled_by_its_lexer_meaning():
    dfa = LazyDFA(compile_lark("start: ESCAPED_STRING\n%import common.ESCAPED_STRING\n"))
    parser = lark.Lark("start: ESCAPED_STRING\n%import common.ESCAPED_STRING\n", parser="earley")
    for text in ['""', '"a\\"b"', '"\\\\"', '"é\\n"']:
        assert dfa.accepts(text) and parses(parser, text), text
    for text in ['"a"b"', '"\\"', '"a\nb"']:
        assert not dfa.accepts(text), text


def test_gbnf_syntax_details():
    text = r"""
    # comments and newlines anywhere between items
    root ::= greeting (
        " " name
    )? "!"{1,3}
    greeting ::= "hi" | "\x48ello" | [\u00e0-\u00e2]
    name ::= [^ !\n]+ .
    """
    dfa = LazyDFA(compile_gbnf(text))
    assert dfa.accepts("hi!") and dfa.accepts("Hello bob!!!") and dfa.accepts("á x\n!")
    assert not dfa.accepts("hi!!!!") and not dfa.accepts("hi bob") and not dfa.accepts("Hi!")


# ------------------------------------------------------------------------------------------ wiring
def test_compiler_grammar_api_and_cache(tokenizer):
    compiler = Compiler.for_tokenizer(tokenizer)
    grammar = compiler.grammar(ARITH_LARK)
    assert compiler.grammar(ARITH_LARK) is grammar
    assert compiler.grammar(ARITH_LARK, start="product") is not grammar  # the start rule is part of the key
    matcher = compiler.grammar(ARITH_GBNF, syntax="gbnf").matcher()
    assert matcher.accept_tokens(tokenizer.encode("(1 + 2) * 3", add_special_tokens=False))
    assert matcher.can_terminate()
    assert grammar.min_tokens() == 1
    with pytest.raises(ValueError, match="syntax"):
        compiler.grammar(ARITH_LARK, syntax="ebnf")


def test_grammar_logits_processor(adversary):
    from constrained.hf import GrammarLogitsProcessor

    tokenizer = adversary.tokenizer
    compiler = Compiler.for_tokenizer(tokenizer)
    grammar = compiler.grammar(SQL_LARK)
    processor = GrammarLogitsProcessor(grammar, max_new_tokens=40)
    batch = tokenizer(["Write SQL."], return_tensors="pt")
    out = adversary.model.generate(
        **batch, logits_processor=[processor], do_sample=True, max_new_tokens=40, pad_token_id=0
    )
    tokens = out[0, batch.input_ids.shape[1] :].tolist()
    eos = grammar.info.eos_token_ids
    text = tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
    assert processor.outputs_complete()[0], text
    assert parses(lark.Lark(SQL_LARK, parser="earley"), text), text


def test_vllm_spec_and_xargs():
    from constrained.vllm_backend import spec_from_extra_args, xargs_for

    spec = spec_from_extra_args(xargs_for(grammar=ARITH_LARK))
    assert spec.kind == "grammar" and spec.syntax == "lark"
    spec.check()
    gbnf = spec_from_extra_args(xargs_for(grammar=ARITH_GBNF, grammar_syntax="gbnf"))
    assert gbnf.syntax == "gbnf"
    gbnf.check()
    with pytest.raises(ValueError, match="left recursion"):
        spec_from_extra_args({"constrained_grammar": 'start: a\na: b\nb: a | "x"\n'}).check()


def test_cli_compile_grammar(tmp_path, capsys):
    from constrained.cli import main

    path = tmp_path / "arith.gbnf"
    path.write_text(ARITH_GBNF)
    main(["compile", "--grammar", str(path), "--syntax", "gbnf", "--explain"])
    out = capsys.readouterr().out
    assert "rule 'sum'" in out and "left recursion rewritten" in out
    path.write_text('start: a\na: b "x"\nb: a\n')
    with pytest.raises(SystemExit) as info:
        main(["compile", "--grammar", str(path)])
    assert info.value.code == 2
    assert "rule 'a'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ server
def ask(server, **extra):
    payload = {
        "model": TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "answer"}],
        "max_tokens": 40,
        **extra,
    }
    return httpx.post(server.url + "/v1/chat/completions", json=payload, timeout=120)


@pytest.mark.parametrize("name", GRAMMARS)
def test_server_structured_outputs_grammar(live_server, compiled, name):
    parser = compiled[name][0]
    for seed in range(2):
        response = ask(live_server, structured_outputs={"grammar": GRAMMARS[name][0]}, seed=seed)
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
        assert parses(parser, text), f"{name}: lark refuses {text!r}"


def test_server_grammar_output_is_closed_within_budget(live_server, compiled):
    """Budget-aware closing goes through the grammar's stack: cut by max_tokens, the output still parses."""
    parser = compiled["json"][0]
    grammar = '?start: "[" value "]"\n' + JSON_LARK.replace("?start: value\n", "")
    for seed in range(3):
        response = ask(live_server, structured_outputs={"grammar": grammar}, seed=seed, max_tokens=6)
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
        assert text.lstrip().startswith("[") and parses(parser, text), text


def test_server_gbnf_grammar_field(live_server, compiled):
    parser = compiled["arith"][0]
    response = ask(live_server, grammar=ARITH_GBNF, seed=1)
    assert response.status_code == 200, response.text
    assert parses(parser, response.json()["choices"][0]["message"]["content"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"structured_outputs": {"grammar": 'start: a\na: b "x"\nb: a\n'}}, "structured_outputs.grammar"),
        ({"structured_outputs": {"grammar": "start: /(?<=a)b/"}}, "structured_outputs.grammar"),
        ({"grammar": "root ::= ("}, "grammar"),
        ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar"),
    ],
)
def test_server_bad_grammar_is_400(live_server, extra, param):
    response = ask(live_server, **extra)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
