"""Human-graded proofs for ``qed judge bench``: one column mapping per public layout.

A layout names the columns of one kind of file (:data:`LAYOUTS`); every column can be
overridden from the command line. Rows follow the project's ``on_bad_row`` policy
(``data/bad_rows.py``): a row without a usable problem, proof or human grade (a number
from 0 to 7) is an error naming the file, row and column, or is skipped and counted.

* ``jsonl``: any file with ``problem_id, problem, proof, human_score`` and optionally
  ``id, rubric, reference_solution`` (the shipped demo set, ``--input demo``).
* ``proofbench``: ProofBench's expert ratings (``problem_id, problem, model_solution,
  marking_scheme, reference_solution, expert_rating``).
* ``gradingbench``: the QED-Nano grading-bench layout (``problem_id`` or
  ``problem_idx``, ``text``, ``model_solution``, ``points``, a rubric ``schema_0`` that is
  a list of ``{title, points | max_points, desc | grading_scheme_desc}`` checkpoints,
  rendered as markdown, and an optional reference ``solution``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qed_lightning.contracts import Problem
from qed_lightning.data.bad_rows import BadRowError, BadRows
from qed_lightning.data.cells import MISSING, id_cell, number_cell, raw_cell, text_cell
from qed_lightning.data.sources import DataSourceError, SourceRow, iter_rows

__all__ = ["DEMO_SET", "LAYOUTS", "BenchItem", "Layout", "load_items"]

DEMO_SET = Path(__file__).resolve().parents[2] / "data" / "demo" / "judge_bench.jsonl"


@dataclass(frozen=True)
class Layout:
    """Column names of one kind of human-graded file.

    Args:
        problem_id: Candidate columns of the problem id, the first present wins.
        problem, proof, human: Required columns.
        rubric, reference: Optional columns (None: the layout has none).
        id: Column of a per-proof id; None numbers rows by their position.
    """

    problem_id: tuple[str, ...]
    problem: str
    proof: str
    human: str
    rubric: str | None = None
    reference: str | None = None
    id: str | None = None


LAYOUTS = {
    "jsonl": Layout(("problem_id",), "problem", "proof", "human_score", "rubric", "reference_solution", "id"),
    "proofbench": Layout(("problem_id",), "problem", "model_solution", "expert_rating", "marking_scheme",
                         "reference_solution"),
    "gradingbench": Layout(("problem_id", "problem_idx"), "text", "model_solution", "points", "schema_0", "solution"),
}
# the grading-bench rubric's alternative key names -> the names the markdown rendering reads
_RUBRIC_KEYS = {"max_points": "points", "grading_scheme_desc": "desc"}


@dataclass(frozen=True)
class BenchItem:
    """One human-graded proof."""

    id: str
    problem: Problem  # its id is the problem id (the group of the per-problem metrics)
    proof: str
    human: float


def _normalised_rubric(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return [{_RUBRIC_KEYS.get(k, k): v for k, v in item.items()
                 if not (k in _RUBRIC_KEYS and _RUBRIC_KEYS[k] in item)} for item in value]
    return value


def _human(row: SourceRow, column: str) -> float:
    score = number_cell(row, column, why=" (the human grade)")
    if not 0 <= score <= 7:
        raise BadRowError(row.origin, "wrong_type", f"column {column!r} is {score:g}; expected a human grade "
                          "from 0 to 7", column)
    return score


def _item(row: SourceRow, layout: Layout) -> BenchItem:
    row.check()
    pid_column = next((c for c in layout.problem_id if c in row.values), layout.problem_id[0])
    problem_id = id_cell(row, pid_column, field="problem id")
    statement = text_cell(row, layout.problem, required=True, field="problem")
    proof = text_cell(row, layout.proof, required=True, field="proof", blank_ok=True)  # empty: scored 0, no call
    human = _human(row, layout.human)
    rubric = None
    if layout.rubric and (value := raw_cell(row, layout.rubric, required=False)) is not MISSING:
        if isinstance(value, list):  # a checkpoint list: the markdown rendering reads one spelling of its keys
            row = dataclasses.replace(row, values={**row.values, layout.rubric: _normalised_rubric(value)})
        rubric = text_cell(row, layout.rubric, required=False, field="rubric", schema=True)
    reference = (text_cell(row, layout.reference, required=False, field="reference", numbers=True)
                 if layout.reference else None)
    item_id = id_cell(row, layout.id, field="id") if layout.id else f"row{row.index}"
    problem = Problem(id=problem_id, statement=statement, rubric=rubric, reference_solution=reference,
                      metadata={"origin": row.origin})
    return BenchItem(item_id, problem, proof, human)


def layout_with(name: str, **columns: Any) -> Layout:
    """Layout ``name`` with the given columns replaced (None values keep the layout's;
    ``""`` unsets an optional column)."""
    if name not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {name!r}")
    changes = {k: v for k, v in columns.items() if v is not None}
    if isinstance(changes.get("problem_id"), str):
        changes["problem_id"] = (changes["problem_id"],)
    changes = {k: (None if v == "" and k in ("rubric", "reference", "id") else v) for k, v in changes.items()}
    return dataclasses.replace(LAYOUTS[name], **changes)


def load_items(source: str, layout: Layout, bad: BadRows, split: str = "train",
               config_name: str | None = None) -> list[BenchItem]:
    """Every usable row of ``source`` (``demo``, a local file or a hub dataset id);
    bad rows go to ``bad``. Duplicate proof ids are an error under both policies:
    they key the verdict files that make a rerun resume."""
    path = str(DEMO_SET) if source == "demo" else source
    items, seen = [], {}
    for row in iter_rows(path, config_name=config_name, split=split):
        try:
            item = _item(row, layout)
        except BadRowError as err:
            bad.add(err)
            continue
        if item.id in seen:
            raise DataSourceError(f"{row.origin}: duplicate id {item.id!r} (first at {seen[item.id]}); ids key the "
                                  "verdicts, so this is an error under on_bad_row: skip too")
        seen[item.id] = row.origin
        items.append(item)
    if not items:
        raise bad.nothing_left("human-graded proofs")
    return items
