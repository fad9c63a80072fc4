"""Shared pieces of schema test data: the records every job produces, the validator, JSON helpers.

Contract:
- `Instance` (a walk or model sample, with `jsonschema`'s verdict) and `NearMiss` (an invalid value with
  the one keyword it violates) are the records; `to_json()` is the line `constrained instances` prints.
- `make_validator(schema)`: the `jsonschema` validator of the draft `$schema` names (2020-12 by default),
  with format checking. It is the judge of validity for every job.
- `compact_json(value)`: the compact text of a value; `json_pointer(parts)` / `escape_token(token)`: RFC
  6901 pointers; `all_finite(value)`: no NaN or infinity anywhere inside.
- `GenerationError`: no instance could be produced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for


@dataclass(frozen=True)
class Instance:
    value: Any
    text: str  # compact JSON (json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    raw: str = ""  # the walk's own text (may hold whitespace / escapes the compact form drops)
    valid: bool = True  # jsonschema's verdict

    def to_json(self) -> str:
        return self.text


@dataclass(frozen=True)
class NearMiss:
    value: Any
    text: str
    violates: str  # jsonschema keyword, e.g. "maxLength"
    pointer: str  # JSON pointer of the schema object holding the keyword
    path: str  # JSON pointer of the instance location
    mutation: str = ""  # what was done, e.g. "maxLength+1"

    def to_json(self) -> str:
        record = {
            "instance": self.value,
            "violates": self.violates,
            "pointer": self.pointer,
            "path": self.path,
        }
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


class GenerationError(ValueError):
    """No instance could be drawn (e.g. the automaton exceeded its state budget)."""


def make_validator(schema: Any) -> Validator:
    """The jsonschema validator for `schema`'s draft (2020-12 by default), with format checking."""
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def compact_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is unless a lone surrogate (from a `\\uD8xx` escape) forces escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"))
    return text


def escape_token(token: Any) -> str:
    """One JSON pointer reference token (`~` -> `~0`, `/` -> `~1`)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def json_pointer(parts: Iterable[Any]) -> str:
    return "".join("/" + escape_token(p) for p in parts)


def all_finite(value: Any) -> bool:
    """No NaN or infinity in `value` (at any depth)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    return True
