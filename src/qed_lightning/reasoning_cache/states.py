"""Which (problem, summary) states a step trains on: a few of each trajectory's states
(the recipe serves 2 of 4), picked by a hash of (run seed, step, problem id) so the
pick does not depend on batching, rank count or a resume."""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

from qed_lightning.reasoning_cache.trajectory import State

__all__ = ["sample_states", "servable"]


def servable(state: State) -> bool:
    """Whether a reasoning prompt can be built from ``state``: it has a summary, and
    only turn 0 may have an empty one (no summary yet, by design). An empty summary
    later means every summary turn so far failed, so the prompt would repeat turn 0's."""
    if state.summary is None:
        return False
    return state.turn == 0 or bool(state.summary.strip())


def _rng(seed: int, step: int, problem_id: str) -> random.Random:
    # "rc_states" keeps this stream apart from the per-sample engine seeds of the same step.
    digest = hashlib.sha256(f"rc_states|{seed}|{step}|{problem_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def sample_states(trajectory_states: Sequence[Sequence[State]], per_problem: int, seed: int,
                  step: int) -> list[State]:
    """Up to ``per_problem`` servable states of each trajectory, without replacement.

    Args:
        trajectory_states: One sequence of states per trajectory (``Trajectory.states``);
            the pick is keyed on their problem id.
        per_problem: States kept per trajectory; all servable ones when it has no more.
        seed: The run seed.
        step: The training step.

    Returns:
        The kept states, trajectory by trajectory, each trajectory's in turn order.
    """
    if per_problem < 1:
        raise ValueError(f"per_problem must be >= 1, got {per_problem}")
    picked: list[State] = []
    for states in trajectory_states:
        candidates = sorted((s for s in states if servable(s)), key=lambda s: s.turn)
        if len(candidates) > per_problem:
            chosen = _rng(seed, step, candidates[0].problem.id).sample(range(len(candidates)), per_problem)
            candidates = [candidates[i] for i in sorted(chosen)]
        picked.extend(candidates)
    return picked
