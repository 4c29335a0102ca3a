"""One seed for the run: ``seed_everything`` drives the sampling seeds and the data
order unless a component is given a seed of its own.

Lightning's ``seed_everything`` (which the CLI calls before it builds the model and
data) records the seed in ``PL_GLOBAL_SEED``; a component whose ``seed`` is None takes
it from there, so two runs with different ``--seed_everything`` sample different
rollouts, and a resumed run (same config) samples the same ones."""
from __future__ import annotations

import os

__all__ = ["run_seed"]


def run_seed(seed: int | None) -> int:
    """``seed`` if given, else the run's ``seed_everything`` seed, else 0."""
    if seed is not None:
        return int(seed)
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
