"""Checkpoint cadence and retention: the newest ``keep_last`` step checkpoints plus
``last.ckpt`` and the checkpoints of ``keep_steps``, every write atomic, and the final
step always saved."""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Sequence

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from qed_lightning.checkpointing.atomic_io import AtomicCheckpointIO

# qed modules optimize manually, one optimizer step per batch; the state after the
# step is exactly what a checkpoint should hold, so Lightning's caution is noise here.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


_STEP_FILE = re.compile(r"step(\d+)(?:-v\d+)?\.ckpt")


class QedCheckpoint(ModelCheckpoint):
    """Keeps the latest checkpoints by step.

    Args:
        dirpath: Where to write; defaults to ``<log_dir>/checkpoints``.
        every_n_train_steps: Save every this many optimizer steps (the end of
            training is always saved).
        keep_last: How many step checkpoints to keep (``-1`` keeps all).
        keep_steps: Steps whose checkpoints are never removed by ``keep_last`` (e.g. the
            SFT steps a later stage may start from; each must be a multiple of
            ``every_n_train_steps`` or the run's last step to be written at all).
        save_last: Also maintain ``last.ckpt`` for resuming.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int = 50,
        keep_last: int = 2,
        keep_steps: Sequence[int] = (),
        save_last: bool = True,
    ) -> None:
        self.keep_steps = frozenset(int(s) for s in keep_steps)
        # "step" is always among ModelCheckpoint's monitor candidates, so ranking by
        # it (mode="max") keeps the newest ``keep_last`` files.
        super().__init__(
            dirpath=dirpath,
            filename="step{step:06d}",
            auto_insert_metric_name=False,
            monitor="step",
            mode="max",
            save_top_k=keep_last,
            every_n_train_steps=every_n_train_steps,
            save_last=save_last,
        )

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        # Retention by keep_last still forgets the file; only its deletion is skipped.
        match = _STEP_FILE.fullmatch(Path(filepath).name)
        if match is not None and int(match.group(1)) in self.keep_steps:
            return
        super()._remove_checkpoint(trainer, filepath)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Installed here so that every save of the run (ours and trainer.save_checkpoint)
        # is atomic; a user-provided IO plugin of another kind is left alone.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def save_resume_point(self, trainer, mid_step: bool = False) -> str:
        """Write ``last.ckpt`` now, whatever the cadence (a collective: every rank calls
        it), and the step's own checkpoint if one is due and not written yet (the
        cadence's own save would skip this step after this one). Used by preemption, at
        a step boundary or (``mid_step``) after a step's rollouts."""
        if not self.save_last:
            raise ValueError("a resume point needs save_last: true in the checkpoint settings")
        candidates = self._monitor_candidates(trainer)
        every = self._every_n_train_steps
        if (not mid_step and every and trainer.global_step % every == 0
                and self._last_global_step_saved != trainer.global_step):
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        return self.last_model_path

    def on_train_start(self, trainer, pl_module) -> None:
        # The run (re)starts at this step: rows an earlier attempt logged for this step
        # or later (after its checkpoint, or from a start that never saved) will be
        # logged again and would appear twice.
        for logger in trainer.loggers:
            if hasattr(logger, "drop_rows_from_step"):
                logger.drop_rows_from_step(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)
