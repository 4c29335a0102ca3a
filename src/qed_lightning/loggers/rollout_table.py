"""A step's rollout samples as a table, in the loggers that show tables.

CSV has none (the rollout records under ``<log_dir>/rollouts`` are its table);
TensorBoard shows markdown text per step; W&B gets a ``wandb.Table``. Other loggers
are left alone. Rows are the recorder's (already cut to its limits).
"""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["COLUMNS", "TABLE_WRITERS", "log_rollout_table", "markdown_table"]

COLUMNS = ("problem_id", "sample", "score", "reward", "completion_tokens", "finish_reason", "text")


def _cell(value) -> str:
    # every line break (model text holds \x0b, \x1c, U+2028 ...) would end the table row
    return "<br>".join(str(value).replace("|", "\\|").splitlines())


def markdown_table(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _tensorboard(logger, key: str, step: int, rows: Sequence[dict]) -> None:
    logger.experiment.add_text(key, markdown_table(rows), global_step=step)


def _wandb(logger, key: str, step: int, rows: Sequence[dict]) -> None:
    logger.log_table(key=key, columns=list(COLUMNS), data=[[r.get(c) for c in COLUMNS] for r in rows], step=step)


# By class name: looking a logger up must not import wandb or tensorboard.
TABLE_WRITERS = {"TensorBoardLogger": _tensorboard, "WandbLogger": _wandb}


def log_rollout_table(loggers: Iterable, step: int, rows: Sequence[dict], key: str = "rollouts") -> list[str]:
    """Logs ``rows`` to every logger that has a table view; returns their class names."""
    done = []
    for logger in loggers:
        writer = TABLE_WRITERS.get(type(logger).__name__)
        if writer is not None:
            writer(logger, key, step, rows)
            done.append(type(logger).__name__)
    return done
