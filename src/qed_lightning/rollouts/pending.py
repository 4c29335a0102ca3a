"""A step's finished rollouts, kept across a preemption that arrives mid-step.

An RL step of the paper's size generates for tens of minutes, longer than any
signal lead. When the signal arrives during generation, the run saves at the end of
the rollout phase instead of the end of the step: the checkpoint holds the weights
the rollouts were sampled with (the step has not trained yet), and each rank writes
its finished generations and verdicts beside it. The resumed run trains step N on
exactly those rollouts instead of generating them again. With generation in parts
(``RolloutProducer(chunks=k)``) a stop can also come between parts: then the finished
groups (completions and verdicts) are saved, and the resumed step generates only the
rest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qed_lightning.checkpointing.atomic_io import atomic_torch_save
from qed_lightning.rollouts.batch import RolloutBatch

__all__ = ["PendingRollouts", "PendingRolloutsError"]


class PendingRolloutsError(RuntimeError):
    pass


class PendingRollouts:
    """Checkpoint component: which step's rollouts wait on disk, and where."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.directory: Path | None = None
        self.world_size: int | None = None

    @staticmethod
    def path(directory: Path, step: int, rank: int) -> Path:
        return Path(directory) / f"step_{step:06d}.rank{rank}.pt"

    def save(self, directory: str | Path, step: int, rank: int, world_size: int, batch: RolloutBatch | None = None,
             metrics: dict[str, float] | None = None, finished: dict | None = None) -> Path:
        """This rank's share of ``step``: the whole ``batch`` (rollouts done) with its
        ``metrics``, or the ``finished`` groups of an interrupted generation
        (problem id -> (completions, verdicts))."""
        if (batch is None) == (finished is None):
            raise ValueError("save either a whole batch or the finished groups")
        path = self.path(Path(directory), step, rank)
        atomic_torch_save({"step": step, "rank": rank, "batch": batch, "metrics": dict(metrics or {}),
                           "finished": finished}, path)
        self.step, self.directory, self.world_size = step, Path(directory), world_size
        return path

    def take(self, step: int, rank: int, world_size: int) -> dict | None:
        """The saved rollouts of ``step`` for ``rank`` (once): ``{"batch", "metrics",
        "finished"}`` (batch None when only finished groups were saved), or None."""
        if self.step is None:
            return None
        if self.step != step:
            raise PendingRolloutsError(f"the checkpoint holds rollouts of step {self.step} but the run resumed at "
                                       f"step {step}")
        if self.world_size != world_size:
            # each rank saved its own share of the step: another world size would drop
            # or miss shares, and change the step's normalisers
            raise PendingRolloutsError(f"the checkpoint holds step {step}'s rollouts from {self.world_size} ranks; "
                                       f"resume it with {self.world_size} ranks, not {world_size}")
        path = self.path(self.directory, step, rank)
        if not path.is_file():
            raise PendingRolloutsError(f"{path}: the checkpoint refers to this rank's saved rollouts of step {step}, "
                                       "but the file is missing")
        # Our own file of dataclasses (completions, verdicts): not a weights-only load.
        saved = torch.load(path, weights_only=False)
        if saved.get("step") != step or saved.get("rank") != rank:
            raise PendingRolloutsError(f"{path}: holds step {saved.get('step')} rank {saved.get('rank')}, "
                                       f"expected step {step} rank {rank}")
        self.step = None  # used: later checkpoints no longer refer to it
        return {"batch": saved["batch"], "metrics": saved["metrics"], "finished": saved.get("finished")}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "directory": None if self.directory is None else str(self.directory),
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.world_size = state.get("step"), state.get("world_size")
        self.directory = Path(state["directory"]) if state.get("directory") else None
