"""Problems checked against what a judge fills into its prompt, before any generation:
one without a rubric, under a template with ``{{marking_scheme}}``, is a bad row
named by file, row and column at setup, not a failure when a step draws it."""
from __future__ import annotations

from typing import Mapping, Sequence

from qed_lightning.contracts import Problem
from qed_lightning.data.bad_rows import BadRowError, BadRows

__all__ = ["problems_for_judge"]


def problems_for_judge(
    problems: Sequence[Problem], judge, columns: Mapping[str, str | None], bad_rows: BadRows | None = None,
) -> list[Problem]:
    """The problems ``judge`` can grade; each other one is a bad row (``judge_needs``)
    naming its file, row and the column the judge's template would fill from.

    Run before any generation: a problem without a rubric, under a template with
    ``{{marking_scheme}}``, would otherwise fail only when a step draws it.

    Args:
        problems: Problems with ``metadata["origin"]`` (their source row).
        judge: Anything with ``check_problems(problems)`` raising ``ValueError``.
        columns: ``Problem`` attribute (``statement``, ``rubric``, ``reference_solution``)
            -> the column it was read from (None: not mapped).
        bad_rows: The ``on_bad_row`` policy and its counts (default: ``error``).
    """
    bad = bad_rows if bad_rows is not None else BadRows()
    kept = []
    for problem in problems:
        try:
            judge.check_problems([problem])
        except ValueError as err:
            # the field the judge found empty: the first empty one it can fill from
            attr = next((a for a in columns if not getattr(problem, a, None)), None)
            column = columns.get(attr) if attr else None
            where = f"column {column!r}" if column else (f"no column is mapped to {attr}" if attr else "the row")
            origin = str(problem.metadata.get("origin", problem.id))
            bad.add(BadRowError(origin, "judge_needs", f"{where}: {err}", column))
            continue
        kept.append(problem)
    return kept
