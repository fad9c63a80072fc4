"""`InstanceGenerator`: one schema's test data, composing the walk, coverage and near-miss jobs.

Contract: `InstanceGenerator(schema, options=None, max_states=)` compiles the schema
(`grammars.compile_json_schema`, raising `SchemaError`) into the same lazily built byte DFA the token
index uses (`compiled`, `dfa`) and builds its `validator` (`make_validator`). Valid instances:
`accepts`, `shortest`, `draw`, `valid` (`walk.ValidSampler`); `sites` and `coverage`
(`coverage.SchemaSites`); near misses: `check_near_miss`, `invalid` (`mutate`). Every result is seeded:
the same schema and seed give the same instances.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from constrained.instances.common import Instance, NearMiss, make_validator
from constrained.instances.coverage import Coverage, SchemaSites, Site
from constrained.instances.mutate import check_near_miss, near_misses
from constrained.instances.walk import ValidSampler
from constrained.token_index.automaton import LazyDFA
from grammars import JsonSchemaOptions, compile_json_schema


class InstanceGenerator:
    def __init__(
        self,
        schema: Mapping[str, Any] | bool,
        options: JsonSchemaOptions | None = None,
        *,
        max_states: int = 200_000,
    ) -> None:
        self.schema = schema
        self.compiled = compile_json_schema(schema, options or JsonSchemaOptions())
        self.dfa = LazyDFA(self.compiled.grammar, max_states=max_states)
        self.validator = make_validator(schema)
        self._sampler = ValidSampler(self.dfa, self.validator)
        self._sites = SchemaSites(schema, self.validator)

    @property
    def rejected_draws(self) -> int:
        """Draws with duplicate keys / non-finite numbers, drawn again."""
        return self._sampler.rejected_draws

    # ---------------------------------------------------------------- valid
    def accepts(self, text: str) -> bool:
        """Whether the compiled automaton accepts `text` (as UTF-8)."""
        return self._sampler.walker.accepts(text)

    def draw(self, rng: random.Random) -> Instance:
        return self._sampler.draw(rng)

    def shortest(self) -> int:
        """Bytes of the shortest instance."""
        return self._sampler.shortest()

    def valid(self, n: int, *, seed: int = 0) -> list[Instance]:
        return self._sampler.valid(n, seed=seed)

    # ---------------------------------------------------------------- coverage
    def sites(self, value: Any) -> list[Site]:
        """Every (schema object, instance location) pair that applies, in walk order."""
        return self._sites.sites(value)

    def coverage(self, instances: Iterable[Instance | NearMiss | Any]) -> Coverage:
        return self._sites.coverage(instances)

    # ---------------------------------------------------------------- invalid
    def check_near_miss(self, value: Any) -> tuple[str, str, str] | None:
        """(keyword, schema pointer, instance pointer) when jsonschema reports errors of exactly one keyword
        at exactly one schema location; else None."""
        return check_near_miss(self.validator, value)

    def invalid(self, n: int, *, seed: int = 0, valid: list[Instance] | None = None) -> list[NearMiss]:
        """Up to `n` near misses of `valid` (default: valid instances drawn with `seed`)."""
        rng = random.Random(seed)
        base = valid if valid is not None else self.valid(max(20, min(n, 100)), seed=seed)
        base = [b for b in base if b.valid]
        return near_misses(base, n, rng, sites=self._sites, validator=self.validator)
