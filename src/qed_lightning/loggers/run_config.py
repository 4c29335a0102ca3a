"""The run's resolved config in the loggers that show a run's configuration.

Lightning logs the module's and the data's hyperparameters; the resolved config (trainer,
checkpointing, export, every default filled in: the ``config.yaml`` of the log
directory) goes to W&B under ``resolved_config``, so a W&B run says exactly how to
rerun it. CSV and TensorBoard keep it as the ``config.yaml`` file itself.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["CONFIG_KEY", "CONFIG_WRITERS", "log_resolved_config"]

CONFIG_KEY = "resolved_config"


def _wandb(logger, config: Mapping[str, Any]) -> None:
    logger.experiment.config.update({CONFIG_KEY: dict(config)}, allow_val_change=True)


# By class name: looking a logger up must not import wandb.
CONFIG_WRITERS = {"WandbLogger": _wandb}


def log_resolved_config(loggers: Iterable, config: Mapping[str, Any]) -> list[str]:
    """Sends ``config`` to every logger that shows one; returns their class names."""
    done = []
    for logger in loggers:
        writer = CONFIG_WRITERS.get(type(logger).__name__)
        if writer is not None:
            writer(logger, config)
            done.append(type(logger).__name__)
    return done
