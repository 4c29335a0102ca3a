"""Callbacks that interrupt a run the way clusters do, for the preemption tests and
``bench/preemption.py``: named by class path in a config or a ``--trainer.callbacks+=``
flag (``qed_lightning.testing.interruptions.SignalAtStep``), so a ``qed fit``
subprocess finds them too."""
from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class SignalAtStep(pl.Callback):
    """Sends ``signal_name`` to this process during step ``step``: at the step's start
    (before its rollouts) or just before its optimizer step (after them)."""

    def __init__(self, step: int, when: str = "before_rollouts", signal_name: str = "SIGUSR1") -> None:
        if when not in ("before_rollouts", "before_optimizer_step"):
            raise ValueError(when)
        self.step, self.when, self.signal_name = step, when, signal_name

    def _send(self, trainer, when: str) -> None:
        if trainer.global_step == self.step and self.when == when:
            os.kill(os.getpid(), signal.Signals[self.signal_name])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._send(trainer, "before_rollouts")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._send(trainer, "before_optimizer_step")


class KillAtStep(pl.Callback):
    """SIGKILL at the start of step ``step``: nothing is saved, nothing is flushed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SleepEachStep(pl.Callback):
    """Makes each step last at least ``seconds``, so a test can signal a run mid-way."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        time.sleep(self.seconds)
