"""Schema test data: diverse valid instances, near-miss invalid instances, and what they cover.

One module per job, each with its contract:
- `common`: the records (`Instance`, `NearMiss`), `make_validator` (the judge), JSON helpers.
- `walk`: valid instances by random walks over the schema's compiled byte automaton.
- `coverage`: the schema objects an instance exercises (`SchemaSites`) and their tally (`Coverage`).
- `mutate`: near misses, valid instances mutated so that exactly one keyword fails.
- `model`: instances sampled by a model under the schema's grammar (`generate_with_model`).
- `generator`: `InstanceGenerator(schema)`, the one entry point composing walk, coverage and mutate.
- `cli`: the `constrained instances` command (`add_arguments`, `run_instances`).
"""

from constrained.instances.cli import add_arguments, run_instances
from constrained.instances.common import GenerationError, Instance, NearMiss, make_validator
from constrained.instances.coverage import Coverage
from constrained.instances.generator import InstanceGenerator
from constrained.instances.model import generate_with_model

__all__ = [
    "Coverage",
    "GenerationError",
    "Instance",
    "InstanceGenerator",
    "NearMiss",
    "add_arguments",
    "generate_with_model",
    "make_validator",
    "run_instances",
]
