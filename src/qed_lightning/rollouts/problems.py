"""Rows of an RL problem source -> ``Problem``s, with the paper's difficulty filter.

Bad rows follow ``on_bad_row`` (``data/bad_rows.py``). Duplicate ids are an error under
both settings: ids key the rollout records, the reasoning cache and the judge's
verdict cache, and which of two rows is the right one is the user's call.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from qed_lightning.contracts import Problem
from qed_lightning.data.bad_rows import BadRowError, BadRows, DataSourceError
from qed_lightning.data.cells import id_cell, number_cell, text_cell
from qed_lightning.data.sources import SourceRow

__all__ = ["ProblemColumns", "judge_columns", "rows_to_problems"]

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


_FILTER_WHY = " (the difficulty filter needs it; or set difficulty_filter: false)"


def _row_problem(row: SourceRow, columns: ProblemColumns) -> Problem:
    row.check()
    statement = text_cell(row, columns.problem, required=True)
    pid = id_cell(row, columns.id) if columns.id else f"row{row.index}"
    rubric = text_cell(row, columns.rubric, required=False, schema=True) if columns.rubric else None
    reference = text_cell(row, columns.reference_solution, required=False) if columns.reference_solution else None
    metadata = {k: v for k, v in row.values.items() if k not in (columns.problem, columns.rubric)}
    metadata["origin"] = row.origin  # where bad-row messages and the judge check point
    return Problem(id=pid, statement=statement, rubric=rubric, reference_solution=reference, metadata=metadata)


def rows_to_problems(
    rows: Iterable[SourceRow], columns: ProblemColumns, difficulty_filter: bool = False,
    max_reward_mean: float = 0.7, min_reward_std: float = 0.08, bad_rows: BadRows | None = None,
) -> tuple[list[Problem], int]:
    """Problems and the number the difficulty filter removed.

    The filter keeps problems the base model solves sometimes but not always
    (mean reward < ``max_reward_mean`` and std > ``min_reward_std``): a group whose
    samples all score the same has zero advantage and teaches nothing. A NaN or
    infinite ``reward_mean``/``reward_std`` is a bad row (``not_finite``), not filtered.

    Args:
        rows: Source rows.
        columns: The column mapping.
        difficulty_filter, max_reward_mean, min_reward_std: The filter.
        bad_rows: The ``on_bad_row`` policy and its counts (default: ``error``).

    Raises:
        DataSourceError: A bad row under ``error`` (naming file, row and column), or a
            duplicate problem id.
    """
    bad = bad_rows if bad_rows is not None else BadRows()
    problems, filtered, seen = [], 0, {}
    for row in rows:
        bad.source = bad.source or row.source
        try:
            problem = _row_problem(row, columns)
            if difficulty_filter:
                mean = number_cell(row, columns.reward_mean, why=_FILTER_WHY)
                std = number_cell(row, columns.reward_std, why=_FILTER_WHY)
        except BadRowError as err:
            bad.add(err)
            continue
        if difficulty_filter and not (mean < max_reward_mean and std > min_reward_std):
            filtered += 1
            continue
        if problem.id in seen:
            raise DataSourceError(f"{row.origin}: duplicate problem id {problem.id!r} (first at {seen[problem.id]}); "
                                  "ids key records and caches, so this is an error under on_bad_row: skip too")
        seen[problem.id] = row.origin
        problems.append(problem)
    return problems, filtered


def judge_columns(columns: ProblemColumns) -> dict[str, str | None]:
    """``data.judge_ready.problems_for_judge``'s column mapping for RL problems."""
    return {"statement": columns.problem, "rubric": columns.rubric, "reference_solution": columns.reference_solution}
