"""A step's rollouts when a preemption may come in the middle of them.

The RL step's first phase: take this step's saved rollouts if a resumed run has them
(whole, or the groups finished before an interruption), otherwise generate; and when
the ranks agree that a preemption signal came, save what exists and stop the run
before training (see ``rollouts/pending.py`` and ``callbacks/preemption.py``).

An error on one rank (the judge down, stale weights, every prompt too long, a saved
share missing) stops every rank with the same message (``rank_failures.py``): the
ranks exchange failures at the end of the phase and between generation parts, before
each preemption check there, so a rank that failed in an early part meets the others
at their next exchange.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl

from qed_lightning.callbacks.preemption import find_preemption_callback
from qed_lightning.contracts import Problem
from qed_lightning.modules.rank_failures import agree_on_failure, exchange_failures
from qed_lightning.rollouts.batch import RolloutBatch
from qed_lightning.rollouts.pending import PendingRollouts
from qed_lightning.rollouts.producer import RolloutProducer, RolloutsInterrupted

__all__ = ["step_rollouts"]


def step_rollouts(trainer: pl.Trainer, producer, pending: PendingRollouts, problems: Sequence[Problem],
                  step: int) -> tuple[RolloutBatch | None, bool]:
    """(rollouts, whether they are a saved batch), or (None, False) when the run saved
    for a preemption and stops before training this step. Raises the same error on
    every rank when the rollouts failed on any."""
    where = f"step {step}: rollouts"
    try:
        rollouts, from_saved = agree_on_failure(lambda: _take_or_produce(trainer, producer, pending, problems, step),
                                                where, agreed=(RolloutsInterrupted,))
    except RolloutsInterrupted as stop:  # between generation parts
        _save_and_stop(trainer, pending, step, "middle of the rollouts", finished=stop.finished)
        return None, False
    if from_saved:
        return rollouts, True
    if _preemption_agreed(trainer):
        _save_and_stop(trainer, pending, step, "end of the rollouts", batch=rollouts, metrics=producer.last_metrics)
        return None, False
    return rollouts, False


def _take_or_produce(trainer, producer, pending: PendingRollouts, problems, step: int) -> tuple[RolloutBatch, bool]:
    saved = pending.take(step, trainer.global_rank, trainer.world_size)
    if saved is not None and saved["batch"] is not None:  # resumed after a save at the end of the rollouts
        producer.last_metrics = saved["metrics"]
        return saved["batch"], True
    return _produce(trainer, producer, problems, step, saved["finished"] if saved else None), False


def _produce(trainer, producer, problems, step: int, finished: dict | None) -> RolloutBatch:
    """Plain rollouts generated in parts check for a failure on any rank, then for a
    preemption, between parts, and can continue from the finished groups of an
    earlier start."""
    if not isinstance(producer, RolloutProducer):  # the reasoning cache: one phase
        return producer.produce(problems, step, expected_version=step)
    return producer.produce(problems, step, expected_version=step, finished=finished,
                            stop_requested=lambda: _between_parts(trainer, step))


def _between_parts(trainer, step: int) -> bool:
    """A rank that failed in this part is met here (see ``rank_failures``), before the
    preemption check, a collective the failed rank does not make."""
    exchange_failures(None, f"step {step}: rollouts")
    return _preemption_agreed(trainer)


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
    # a rank's own file: a failed write stops every rank before the checkpoint's collectives
    agree_on_failure(lambda: pending.save(directory, step, trainer.global_rank, trainer.world_size, **saved),
                     f"step {step}: saving the rollouts for a preemption")
    preemption.save_and_stop(trainer, where, mid_step=True)
