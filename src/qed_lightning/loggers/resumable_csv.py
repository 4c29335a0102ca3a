"""``CSVLogger`` for runs that resume into their own log directory.

Lightning's CSV writer deletes an existing ``metrics.csv`` when its directory is
reused, so a requeued job (same version, same directory) would lose every row of its
earlier attempts. This one appends to it, keeps its columns, writes rows to disk with
every checkpoint (so what a checkpoint has seen is never lost with the process), and
drops the rows of steps a resumed run is about to redo.
"""
from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["ResumableCSVLogger"]

# Metrics logged against the number of finished steps rather than the index of the
# step being trained (EvaluationCallback): a row of them at the resume step is history.
AFTER_STEP_PREFIXES = ("eval/",)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def drop_rows_from_step(self, step: int, kept_prefixes: tuple[str, ...] = ()) -> int:
        """Remove rows with ``step >= step``, except rows at ``step`` itself whose every
        metric starts with one of ``kept_prefixes``; returns how many were removed."""
        def keep(row) -> bool:
            at = int(float(row["step"])) if row.get("step") not in (None, "") else -1
            if at < step:
                return True
            if at > step or not kept_prefixes:
                return False
            names = [k for k, v in row.items() if k != "step" and v not in (None, "")]
            return bool(names) and all(k.startswith(kept_prefixes) for k in names)

        self.metrics = [m for m in self.metrics if keep(m)]
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            fieldnames, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if keep(r)]
        if len(kept) != len(rows):
            tmp = self.metrics_file_path + ".tmp"
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, self.metrics_file_path)
        return len(rows) - len(kept)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends across resumes; see the module doc. Same arguments,
    but rows reach the disk every step by default (an RL step is minutes long, and a
    killed process loses what it had not flushed)."""

    def __init__(self, save_dir, name: str | None = "lightning_logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 1) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_rows_from_step(self, step: int) -> None:
        """Before a (re)start at ``step``: drop what earlier attempts logged for this step
        and later ones. Training rows are numbered by step index, so the row of step
        ``step`` is redone; metrics logged after ``step`` steps were done (evaluation,
        ``eval/*``, logged with the finished-step count) are kept."""
        self.save()
        self.experiment.drop_rows_from_step(step, kept_prefixes=AFTER_STEP_PREFIXES)  # no-op off rank zero

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()
