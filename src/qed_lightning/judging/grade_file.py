"""``qed judge``: grade a JSONL of (problem, rubric, proof) rows and write verdicts.

For checking a judge (its prompt, its server, its failure rate) before spending GPU
hours on RL. Verdicts are appended as each batch finishes; running the same command
again skips the ids that already have a verdict and regrades the ones that failed
(the newest line for an id is the one that counts).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qed_lightning.contracts import GradingItem, Problem, Verdict
from qed_lightning.data.sources import DataSourceError, iter_rows
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


def _item(
    values: dict[str, Any], origin: str, columns: dict[str, str | None], metadata_columns: list[str]
) -> tuple[str, GradingItem]:
    def column(key: str, required: bool) -> Any:
        name = columns[key]
        if name is None:
            return None
        if name not in values or values[name] is None:
            if required:
                raise DataSourceError(f"{origin}: missing column {name!r} (set --{key}_column); has {sorted(values)}")
            return None
        return values[name]

    pid = str(column("id", True))
    problem = Problem(
        id=pid, statement=str(column("problem", True)),
        rubric=column("rubric", False), reference_solution=column("reference", False),
        metadata={name: values.get(name) for name in metadata_columns},
    )
    return pid, GradingItem(problem, str(column("proof", True)))


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

    Returns:
        The judge metrics over the items graded in this run.
    """
    columns = {"id": id_column, "problem": problem_column, "proof": proof_column,
               "rubric": rubric_column, "reference": reference_column}
    items: list[tuple[str, GradingItem]] = []
    seen: dict[str, str] = {}
    for row in iter_rows(input):
        pid, item = _item(row.values, row.origin, columns, list(metadata_columns or []))
        if pid in seen:
            raise DataSourceError(f"{row.origin}: duplicate id {pid!r} (first at {seen[pid]})")
        seen[pid] = row.origin
        items.append((pid, item))
    done = {pid for pid, row in read_verdicts(output).items() if row.get("error") is None}
    todo = [(pid, item) for pid, item in items if pid not in done]
    judge.check_problems([item.problem for _, item in todo])  # all data errors before any call
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
    print(json.dumps({k: v for k, v in metrics.items() if v or "rate" in k}, indent=1))
    return metrics
