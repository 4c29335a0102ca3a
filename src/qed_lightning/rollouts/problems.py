"""Rows of an RL problem source -> ``Problem``s, with the paper's difficulty filter."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

from qed_lightning.contracts import Problem
from qed_lightning.data.sources import DataSourceError, SourceRow

__all__ = ["ProblemColumns", "rows_to_problems"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProblemColumns:
    """Which column holds what (FineProofs-RL: ``problem``, ``rubrics``, no id)."""

    problem: str = "problem"
    rubric: str | None = "rubrics"
    id: str | None = None
    reference_solution: str | None = None
    reward_mean: str = "reward_mean"
    reward_std: str = "reward_std"


def _text(values: dict[str, Any], column: str | None, origin: str, required: bool) -> str | None:
    if column is None:
        return None
    value = values.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        if required:
            raise DataSourceError(f"{origin}: column {column!r} is missing or empty (columns: {sorted(values)})")
        return None
    return str(value)


def rows_to_problems(
    rows: Iterable[SourceRow], columns: ProblemColumns, difficulty_filter: bool = False,
    max_reward_mean: float = 0.7, min_reward_std: float = 0.08,
) -> tuple[list[Problem], int]:
    """Problems and the number the difficulty filter removed.

    The filter keeps problems the base model solves sometimes but not always
    (mean reward < ``max_reward_mean`` and std > ``min_reward_std``): a group whose
    samples all score the same has zero advantage and teaches nothing.
    """
    problems, filtered, seen = [], 0, {}
    for row in rows:
        statement = _text(row.values, columns.problem, row.origin, True)
        if difficulty_filter:
            try:
                mean, std = float(row.values[columns.reward_mean]), float(row.values[columns.reward_std])
            except (KeyError, TypeError, ValueError):
                raise DataSourceError(
                    f"{row.origin}: the difficulty filter needs numeric {columns.reward_mean!r} and "
                    f"{columns.reward_std!r} columns (or set difficulty_filter: false)"
                ) from None
            if not (mean < max_reward_mean and std > min_reward_std):
                filtered += 1
                continue
        pid = _text(row.values, columns.id, row.origin, True) if columns.id else f"row{row.index}"
        if pid in seen:
            raise DataSourceError(f"{row.origin}: duplicate problem id {pid!r} (first at {seen[pid]})")
        seen[pid] = row.origin
        problems.append(Problem(
            id=pid, statement=statement,
            rubric=_text(row.values, columns.rubric, row.origin, False),
            reference_solution=_text(row.values, columns.reference_solution, row.origin, False),
            metadata={k: v for k, v in row.values.items() if k not in (columns.problem, columns.rubric)},
        ))
    return problems, filtered
