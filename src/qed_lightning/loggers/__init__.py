"""Loggers that survive a resume: CSV that appends, and the rollout samples table."""
from qed_lightning.loggers.resumable_csv import ResumableCSVLogger
from qed_lightning.loggers.rollout_table import log_rollout_table

__all__ = ["ResumableCSVLogger", "log_rollout_table"]
