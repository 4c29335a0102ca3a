"""A pool of reasoning-cache states, refreshed on a cadence and served to later steps.

The online default builds a step's states inside the step. The pool trades freshness
for batching: ``ReasoningCacheCallback`` builds the states of the coming steps' problems
in one go every k steps, and the producer serves them from here; a problem with no
servable state in the pool is built online as before. The pool is checkpointed
(through the callback's state), so a resumed run serves the same states.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from qed_lightning.contracts import Problem
from qed_lightning.reasoning_cache.states import servable
from qed_lightning.reasoning_cache.trajectory import State, Trajectory

__all__ = ["StatePool"]


class StatePool:
    def __init__(self) -> None:
        self._states: dict[str, list[State]] = {}
        self._built_at: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()
        self._built_at.clear()

    def put(self, trajectories: Iterable[Trajectory], step: int) -> None:
        """Replaces the states of each trajectory's problem with its new ones."""
        for t in trajectories:
            self._states[t.problem.id] = list(t.states)
            self._built_at[t.problem.id] = step

    def get(self, problem_id: str) -> list[State] | None:
        """The problem's states, or None when it has no servable one (never built, or
        every prompt was too long): such a problem is built online, never served empty."""
        states = self._states.get(problem_id)
        if states is None or not any(servable(s) for s in states):
            return None
        return states

    def built_at(self, problem_id: str) -> int | None:
        return self._built_at.get(problem_id)

    @staticmethod
    def encode(state: State) -> dict[str, Any]:
        problem = dataclasses.asdict(state.problem)
        problem["metadata"] = dict(problem["metadata"])
        return {"problem": problem, "turn": state.turn, "summary": state.summary}

    @staticmethod
    def decode(data: dict[str, Any]) -> State:
        return State(Problem(**data["problem"]), int(data["turn"]), data["summary"])

    def state_dict(self) -> dict[str, Any]:
        return {"states": {pid: [self.encode(s) for s in states] for pid, states in self._states.items()},
                "built_at": dict(self._built_at)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._states = {pid: [self.decode(s) for s in states] for pid, states in state.get("states", {}).items()}
        self._built_at = {pid: int(step) for pid, step in state.get("built_at", {}).items()}
