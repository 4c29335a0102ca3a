"""Loggers that survive a resume: CSV that appends, the rollout samples table, and the
resolved config in the loggers that show one."""
from qed_lightning.loggers.resumable_csv import ResumableCSVLogger
from qed_lightning.loggers.rollout_table import log_rollout_table
from qed_lightning.loggers.run_config import log_resolved_config

__all__ = ["ResumableCSVLogger", "log_resolved_config", "log_rollout_table"]
