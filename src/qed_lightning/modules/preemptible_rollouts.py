"""A step's rollouts when a preemption may come in the middle of them.

The RL step's first phase: take this step's saved rollouts if a resumed run has them
(whole, or the groups finished before an interruption), otherwise generate; and when
the ranks agree that a preemption signal came, save what exists and stop the run
before training (see ``rollouts/pending.py`` and ``callbacks/preemption.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl

from qed_lightning.callbacks.preemption import find_preemption_callback
from qed_lightning.contracts import Problem
from qed_lightning.rollouts.batch import RolloutBatch
from qed_lightning.rollouts.pending import PendingRollouts
from qed_lightning.rollouts.producer import RolloutProducer, RolloutsInterrupted

__all__ = ["step_rollouts"]


def step_rollouts(trainer: pl.Trainer, producer, pending: PendingRollouts, problems: Sequence[Problem],
                  step: int) -> tuple[RolloutBatch | None, bool]:
    """(rollouts, whether they are a saved batch), or (None, False) when the run saved
    for a preemption and stops before training this step."""
    saved = pending.take(step, trainer.global_rank, trainer.world_size)
    if saved is not None and saved["batch"] is not None:  # resumed after a save at the end of the rollouts
        producer.last_metrics = saved["metrics"]
        return saved["batch"], True
    try:
        rollouts = _produce(trainer, producer, problems, step, saved["finished"] if saved else None)
    except RolloutsInterrupted as stop:  # between generation parts
        _save_and_stop(trainer, pending, step, "middle of the rollouts", finished=stop.finished)
        return None, False
    if _preemption_agreed(trainer):
        _save_and_stop(trainer, pending, step, "end of the rollouts", batch=rollouts, metrics=producer.last_metrics)
        return None, False
    return rollouts, False


def _produce(trainer, producer, problems, step: int, finished: dict | None) -> RolloutBatch:
    """Plain rollouts generated in parts check for a preemption between parts and can
    continue from the finished groups of an earlier start."""
    if not isinstance(producer, RolloutProducer):  # the reasoning cache: one phase
        return producer.produce(problems, step, expected_version=step)
    return producer.produce(problems, step, expected_version=step, finished=finished,
                            stop_requested=lambda: _preemption_agreed(trainer))


def _preemption_agreed(trainer) -> bool:
    """Whether the ranks agree to stop for a preemption (a collective, or False with no
    preemption callback)."""
    preemption = find_preemption_callback(trainer)
    return preemption is not None and preemption.check_after_rollouts(trainer)


def _save_and_stop(trainer, pending: PendingRollouts, step: int, where: str, **saved) -> None:
    """Save now, with what the rollouts finished (the weights have not moved yet),
    rather than after a whole step."""
    preemption = find_preemption_callback(trainer)
    directory = Path(preemption.checkpoint_dir(trainer)) / "pending_rollouts"
    pending.save(directory, step, trainer.global_rank, trainer.world_size, **saved)
    preemption.save_and_stop(trainer, where, mid_step=True)
