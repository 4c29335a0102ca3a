"""``qed judge``: grade a JSONL of (problem, rubric, proof) rows and write verdicts.

For checking a judge (its prompt, its server, its failure rate) before spending GPU
hours on RL. Verdicts are appended as each batch finishes; running the same command
again skips the ids that already have a verdict and regrades the ones that failed
(the newest line for an id is the one that counts).

Input rows follow ``on_bad_row`` (``data/bad_rows.py``): a row without a usable id,
problem or proof, a value of the wrong type, an unparseable line, or a problem lacking
what the judge's template fills in (checked for every row before the first call) is
an error naming file, row and column, or is skipped and counted. Duplicate ids are an
error under both settings: ids key the verdict file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qed_lightning.contracts import GradingItem, Problem, Verdict
from qed_lightning.data.bad_rows import BadRowError, BadRows
from qed_lightning.data.cells import MISSING, id_cell, raw_cell, text_cell
from qed_lightning.data.judge_ready import problems_for_judge
from qed_lightning.data.sources import DataSourceError, SourceRow, iter_rows
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.stats import JudgeStats

__all__ = ["grade_file", "read_verdicts"]


def read_verdicts(path: str | Path) -> dict[str, dict[str, Any]]:
    """id -> the newest verdict line of an output file (empty if there is none)."""
    out: dict[str, dict[str, Any]] = {}
    path = Path(path)
    if not path.exists():
        return out
    for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            # A line cut by a crash mid-write: that item is simply graded again.
            continue
    return out


def _item(row: SourceRow, columns: dict[str, str | None], metadata_columns: list[str]) -> tuple[str, GradingItem]:
    row.check()
    for key in ("id", "problem", "proof"):  # a missing column: say which setting names it
        raw_cell(row, columns[key], required=True, field=key, why=f" (set --{key}_column)")
    pid = id_cell(row, columns["id"], field="id")
    statement = text_cell(row, columns["problem"], required=True, field="problem")
    # An empty proof is a proof: the judge scores it 0 without a call.
    proof = text_cell(row, columns["proof"], required=True, field="proof", blank_ok=True)
    rubric = (text_cell(row, columns["rubric"], required=False, field="rubric", schema=True)
              if columns["rubric"] else None)
    reference = (text_cell(row, columns["reference"], required=False, field="reference")
                 if columns["reference"] else None)
    metadata = {name: None if (v := raw_cell(row, name, required=False)) is MISSING else v for name in metadata_columns}
    metadata.setdefault("origin", row.origin)  # where a judge-check message points
    problem = Problem(id=pid, statement=statement, rubric=rubric, reference_solution=reference, metadata=metadata)
    return pid, GradingItem(problem, proof)


def _line(pid: str, v: Verdict) -> str:
    return json.dumps({"id": pid, "score": v.score, "error": v.error, "origin": v.origin,
                       "latency_s": round(v.latency_s, 4), "attempts": v.attempts, "raw": v.raw}, ensure_ascii=False)


def grade_file(
    judge: BaseJudge,
    input: str,
    output: str,
    id_column: str = "id",
    problem_column: str = "problem",
    proof_column: str = "proof",
    rubric_column: str | None = "rubric",
    reference_column: str | None = "reference_solution",
    metadata_columns: list[str] | None = None,
    batch_size: int = 32,
    on_bad_row: str = "error",
) -> dict[str, float]:
    """Grades every row of ``input`` (JSONL/JSON/CSV/Parquet) and appends verdicts to
    ``output`` (JSONL: id, score, error, origin, latency_s, attempts, raw).

    Args:
        judge: The judge to check (LLMJudge with an HTTP client, RuleJudge...).
        input: File with one proof per row.
        output: Verdicts JSONL; existing verdicts are kept and their ids skipped.
        id_column, problem_column, proof_column: Required columns.
        rubric_column, reference_column: Optional columns (null to ignore).
        metadata_columns: Columns copied into ``Problem.metadata`` (e.g. ``answer`` for
            the ``boxed_answer_matches`` rule).
        batch_size: Items per ``judge.grade`` call (the client runs them concurrently).
        on_bad_row: ``error`` (stop at the first bad row, naming file, row and column)
            or ``skip`` (leave bad rows out; their count by reason is printed and returned).

    Returns:
        The judge metrics over the items graded in this run, plus ``data/skipped_rows``
        and ``data/skipped/<reason>`` under ``skip``.
    """
    columns = {"id": id_column, "problem": problem_column, "proof": proof_column,
               "rubric": rubric_column, "reference": reference_column}
    bad = BadRows(on_bad_row, input)
    items: list[tuple[str, GradingItem]] = []
    seen: dict[str, str] = {}
    for row in iter_rows(input):
        try:
            pid, item = _item(row, columns, list(metadata_columns or []))
        except BadRowError as err:
            bad.add(err)
            continue
        if pid in seen:
            raise DataSourceError(f"{row.origin}: duplicate id {pid!r} (first at {seen[pid]}); "
                                  "ids key the verdicts, so this is an error under on_bad_row: skip too")
        seen[pid] = row.origin
        items.append((pid, item))
    # every row, graded before or not: all data errors before any call
    gradable = {id(p) for p in problems_for_judge(
        [item.problem for _, item in items], judge,
        {"statement": problem_column, "rubric": rubric_column, "reference_solution": reference_column}, bad)}
    items = [(pid, item) for pid, item in items if id(item.problem) in gradable]
    if not items:
        raise bad.nothing_left("rows to grade")
    if bad.total:
        print(f"{input}: {bad.describe()}", flush=True)
    done = {pid for pid, row in read_verdicts(output).items() if row.get("error") is None}
    todo = [(pid, item) for pid, item in items if pid not in done]
    stats = JudgeStats()
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            verdicts = judge.grade([item for _, item in batch])
            for (pid, _), verdict in zip(batch, verdicts):
                stats.add(verdict)
                out.write(_line(pid, verdict) + "\n")
            out.flush()
            os.fsync(out.fileno())
            print(f"graded {min(start + batch_size, len(todo))}/{len(todo)} "
                  f"({len(items) - len(todo)} already done)", flush=True)
    metrics = stats.metrics()
    if bad.policy == "skip":
        metrics.update(bad.metrics())
    print(json.dumps({k: v for k, v in metrics.items() if v or "rate" in k}, indent=1))
    return metrics
