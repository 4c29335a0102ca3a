"""``PreemptionCallback``: save at a point every rank reaches, then stop (and requeue).

A signal (SLURM: ``#SBATCH --signal=USR1@<lead>``) only raises a flag. At the end
of each step the ranks agree on it (one all-reduce: any rank's flag counts); if set,
``last.ckpt`` is written through the checkpoint callback, the loggers are flushed,
training stops, and under SLURM rank 0 runs ``scontrol requeue`` once the run has
ended. A signal seen at the boundary of the run's last step lets the run finish instead. The RL module also
checks the flag when a step's rollouts are finished, and between their generation
parts (``rollout_chunks``), so a step longer than the lead still ends in a resumable
save of what it finished (see ``rollouts/pending.py``).

Lead time: at least one step plus one save at the step boundary; with the checks in the
rollouts, the longest of (one generation part, the training phase) plus one save.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from qed_lightning.preemption.signals import preemption_request
from qed_lightning.preemption.slurm import requeue_job, slurm_job_id, undetected_slurm_reason

__all__ = ["PreemptionCallback", "find_preemption_callback", "preempted"]

log = logging.getLogger(__name__)


class PreemptionCallback(pl.Callback):
    """Args:
        signals: Signal names that ask for a save (SLURM sends ``--signal=USR1@lead``
            to every task). SIGTERM is left to Lightning: it comes seconds before a kill.
        requeue: Under SLURM, rank 0 requeues the job after the save; the new start
            resumes from ``last.ckpt`` (``ckpt_path: last``) in the same log directory.
    """

    def __init__(self, signals: Sequence[str] = ("SIGUSR1",), requeue: bool = True) -> None:
        self.signals, self.requeue = list(signals), requeue
        self.saved: dict | None = None  # where and when this run saved for a preemption
        self._saving_mid_step = False
        self._requeue_job: str | None = None  # set once saved, acted on when the run has ended

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        preemption_request.clear()
        _resume_checkpoint(trainer)  # a missing checkpoint callback is an error now, not at the signal
        # Before Lightning's signal connector: it installs its own SLURM handler (a save
        # inside the handler) only where no handler is set.
        if not preemption_request.install(self.signals):
            rank_zero_warn("PreemptionCallback: not in the main thread, no signal handler installed")
        reason = undetected_slurm_reason()
        if reason:
            rank_zero_warn(f"inside a SLURM allocation, but not run as a SLURM job: {reason}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        preemption_request.restore()
        # Requeue only now: SLURM stops the job's processes at once, so the rest of the
        # step (later callbacks, the step's metrics, the loggers' final flush) must be
        # done first. Everything resumable was saved before.
        job, self._requeue_job = self._requeue_job, None
        if job is not None and trainer.is_global_zero and not requeue_job(job):
            raise RuntimeError(f"saved {self.saved['path']} for a preemption but could not requeue SLURM job "
                               f"{job}: resubmit it (ckpt_path: last resumes from that checkpoint)")

    @staticmethod
    def agreed(trainer: pl.Trainer) -> bool:
        """Whether any rank was asked to stop (a collective: every rank calls it)."""
        return trainer.strategy.reduce_boolean_decision(preemption_request.requested, all=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.saved is None and self.agreed(trainer):
            if _ends_after_this_step(trainer):  # ending anyway: its own save and export follow
                rank_zero_info("preemption requested at the last step: finishing the run instead")
                return
            self.save_and_stop(trainer, "step boundary")

    def check_after_rollouts(self, trainer: pl.Trainer) -> bool:
        """For the RL module, once the step's rollouts are done: whether to save now."""
        return self.saved is None and self.agreed(trainer)

    @staticmethod
    def checkpoint_dir(trainer: pl.Trainer) -> str:
        return _resume_checkpoint(trainer).dirpath

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._saving_mid_step:
            # Lightning adds one to its logged-step counter when it restarts from a save
            # made inside a batch (it assumes the batch was done); this batch was not.
            loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
            if "_batches_that_stepped" in loop:
                loop["_batches_that_stepped"] -= 1

    def save_and_stop(self, trainer: pl.Trainer, where: str, mid_step: bool = False) -> str:
        """Saves ``last.ckpt``, flushes the loggers, stops (and, under SLURM, requeues
        the job once the run has ended).
        ``mid_step``: called from inside a training step (after its rollouts)."""
        checkpoint = _resume_checkpoint(trainer)
        self._saving_mid_step = mid_step
        start = time.perf_counter()
        try:
            path = checkpoint.save_resume_point(trainer, mid_step=mid_step)
        finally:
            self._saving_mid_step = False
        for logger in trainer.loggers:
            logger.save()
        trainer.should_stop = True
        self.saved = {"step": trainer.global_step, "where": where, "path": path,
                      "signal": preemption_request.signal_name, "seconds": time.perf_counter() - start}
        rank_zero_info(f"preemption ({self.saved['signal'] or 'another rank'}): saved {path} at the {where} of "
                       f"step {trainer.global_step} in {self.saved['seconds']:.1f} s; stopping")
        job = slurm_job_id()
        if self.requeue and job is not None and undetected_slurm_reason() is None:
            self._requeue_job = job  # at teardown (rank 0)
        return path


def _ends_after_this_step(trainer: pl.Trainer) -> bool:
    """Whether the step that just finished is the run's last (same answer on every rank)."""
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return True
    last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
    return last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def _resume_checkpoint(trainer: pl.Trainer):
    for callback in trainer.checkpoint_callbacks:
        if hasattr(callback, "save_resume_point"):
            return callback
    raise ValueError("preemption needs qed's checkpoint callback (QedCheckpoint) with save_last: true")


def find_preemption_callback(trainer: pl.Trainer | None) -> PreemptionCallback | None:
    if trainer is None:
        return None
    return next((c for c in trainer.callbacks if isinstance(c, PreemptionCallback)), None)


def preempted(trainer: pl.Trainer | None) -> bool:
    """Whether this run stopped for a preemption (it will be resumed, it did not finish)."""
    callback = find_preemption_callback(trainer)
    return callback is not None and callback.saved is not None
