"""The grammars the grammar tests and `bench/masks.py --grammars` share: Lark and GBNF versions of a JSON
grammar, an arithmetic-expression grammar, a small SQL `SELECT` subset and a CSV grammar.

`GRAMMARS[name] = (lark_text, gbnf_text, valid_strings, invalid_strings)`; the valid and invalid strings are
hand-written. `walk(dfa, rng, steps)` is a random string of a grammar's language, from our automaton.
"""

from __future__ import annotations

import random

from constrained.token_index import LazyDFA
from constrained.token_index.automaton import DEAD

JSON_LARK = r"""
?start: value
?value: object | array | string | SIGNED_NUMBER -> number | "true" | "false" | "null"
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: string ":" value
string: ESCAPED_STRING
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""
JSON_GBNF = r"""
root   ::= ws value
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( pair ( "," ws pair )* )? "}" ws
pair   ::= string ":" ws value
array  ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" ( [^"\\\n] | "\\" [^\n] )* "\"" ws
number ::= [+-]? ( int exp | decimal exp? | int ) ws
decimal ::= int "." int? | "." int
exp    ::= [eE] [+-]? int
int    ::= [0-9]+
ws     ::= [ \t\f\r\n]*   # Lark's common.WS, ignored between tokens
"""
ARITH_LARK = r"""
?start: sum
?sum: sum "+" product | sum "-" product | product
?product: product "*" atom | product "/" atom | atom
?atom: NUMBER | "-" atom | "(" sum ")"
NUMBER: /[0-9]+/
%ignore " "
"""
ARITH_GBNF = r"""
root    ::= ws sum
sum     ::= sum "+" ws product | sum "-" ws product | product
product ::= product "*" ws atom | product "/" ws atom | atom
atom    ::= [0-9]+ ws | "-" ws atom | "(" ws sum ")" ws
ws      ::= " "*
"""
SQL_LARK = r"""
start: "SELECT"i select_list "FROM" NAME where? order? limit? ";"?
select_list: "*" | column ("," column)*
column: NAME ("." NAME)?
where: "WHERE" condition (("AND" | "OR") condition)*
condition: column OP value
value: SIGNED_NUMBER | STRING | column | "NULL"i
order: "ORDER" "BY" column ("ASC" | "DESC")?
limit: "LIMIT" INT
OP: "=" | "<>" | "<=" | ">=" | "<" | ">"
STRING: /'(?:[^'\n]|'')*'/
NAME: /[a-z_][a-z0-9_]*/
%import common.INT
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""
SQL_GBNF = r"""
root      ::= ws select list "FROM" ws name where? order? limit? (";" ws)?
select    ::= [Ss\u017f] [Ee] [Ll] [Ee] [Cc] [Tt] ws   # Python's re.IGNORECASE: 'ſ' folds to 's'
list      ::= "*" ws | column ("," ws column)*
column    ::= name ("." ws name)?
name      ::= [a-z_] [a-z0-9_]* ws
where     ::= "WHERE" ws condition (("AND" | "OR") ws condition)*
condition ::= column ("=" | "<>" | "<=" | ">=" | "<" | ">") ws value
value     ::= number | "'" ([^'\n] | "''")* "'" ws | column | [Nn] [Uu] [Ll] [Ll] ws
order     ::= "ORDER" ws "BY" ws column (("ASC" | "DESC") ws)?
limit     ::= "LIMIT" ws [0-9]+ ws
number    ::= [+-]? ( int exp | decimal exp? | int ) ws
decimal   ::= int "." int? | "." int
exp       ::= [eE] [+-]? int
int       ::= [0-9]+
ws        ::= [ \t\f\r\n]*
"""
CSV_LARK = r"""
start: row (_NL row)* _NL?
row: field ("," field)*
field: (ESCAPED | TEXT)?
ESCAPED: /"(?:[^"]|"")*"/
TEXT: /[^,"\n\r]+/
_NL: /\r?\n/
"""
CSV_GBNF = r"""
root    ::= row (nl row)* nl?
row     ::= field ("," field)*
field   ::= (escaped | text)?
escaped ::= "\"" ([^"] | "\"\"")* "\""
text    ::= [^,"\n\r]+
nl      ::= "\r"? "\n"
"""
GRAMMARS = {
    "json": (
        JSON_LARK,
        JSON_GBNF,
        ['{"a": [1, -2.5e3, true, null], "b": {"c": "x\\"y"}}', "  [ ]  ", '"\\u00e9"', "-0.5"],
        ['{"a" 1}', "[1,]", "[1 2]", '"unterminated', "tru", '{"a":1}}', "'single'", '"a\nb"'],
    ),
    "arith": (
        ARITH_LARK,
        ARITH_GBNF,
        ["1", " 1 + 2 * (3 - -4) / 5 ", "(" * 20 + "7" + ")" * 20, "--1"],
        ["1 +", "(1", "1)", "1 2", "+1", "()", "(" * 20 + "7" + ")" * 19, "1 ++ 2"],
    ),
    "sql": (
        SQL_LARK,
        SQL_GBNF,
        [
            "SELECT * FROM t",
            "select a, b.c FROM t WHERE a = 'x''y' AND b.c <> NULL ORDER BY a DESC LIMIT 10;",
            "SeLeCt x FROM y WHERE x >= -1.5e2 OR x < z",
        ],
        ["SELECT FROM t", "SELECT * FROM", "SELECT * from t", "SELECT a, FROM t", "SELECT * FROM t LIMIT x"],
    ),
    "csv": (
        CSV_LARK,
        CSV_GBNF,
        ['a,b,c\n1,"x, ""y""",3\n', "", ",,\r\n,", '"multi\nline",x'],
        ['a"b', '"open', 'x,"y"z', "a\rb"],
    ),
}


def walk(dfa: LazyDFA, rng: random.Random, steps: int, prefix: bytes = b"") -> str:
    """A random string of the language: ``prefix``, ``steps`` moves to uniformly chosen distinct next states
    (a random byte leading there), then the shortest completion."""
    state = dfa.initial
    out = bytearray()
    for byte in prefix:
        state = dfa.row(state)[byte]
        assert state != DEAD, f"{prefix!r} leaves the language"
        out.append(byte)
    for _ in range(steps):
        by_target: dict[int, list[int]] = {}
        for byte, target in enumerate(dfa.row(state)):
            if target != DEAD:
                by_target.setdefault(target, []).append(byte)
        if not by_target:
            break
        state = rng.choice(sorted(by_target))
        out.append(rng.choice(by_target[state]))
    out += dfa.completion(state)
    return out.decode()
