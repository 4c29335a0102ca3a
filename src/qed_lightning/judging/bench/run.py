"""``qed judge bench``: grade human-graded proofs with one or more judges, measure each.

Every judge configuration (a label -> a judge, as in ``configs/judge/bench_*.yaml``)
grades the same proofs through its own ``grade`` (templates, clients, verdict cache,
concurrency and fault handling are the judge stack's). Verdicts are appended to
``<output_dir>/<label>/verdicts.jsonl`` batch by batch; running the same command again
skips proofs that already have a verdict and regrades the failed ones, like ``qed
judge``. Then every metric (``metrics.py``) with a bootstrap interval over problems
(``bootstrap.py``), the paired difference of each judge to the first one, and the
report (``report.py``) are written. ``--compare '[A,B]'`` compares two earlier runs'
``metrics.json`` instead of grading.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from qed_lightning.contracts import GradingItem
from qed_lightning.data.bad_rows import BadRows
from qed_lightning.data.judge_ready import problems_for_judge
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.bench import bootstrap, report
from qed_lightning.judging.bench.data import BenchItem, layout_with, load_items
from qed_lightning.judging.bench.metrics import (
    FAILURE_POLICIES, ScoredRow, confusion, percentile, point_estimates, problem_table,
)
from qed_lightning.judging.bench.tokens import meter_judge, tokens_per_item
from qed_lightning.judging.grade_file import read_verdicts

__all__ = ["judge_bench", "measure"]

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
METRICS_FILE, VERDICTS_FILE = "metrics.json", "verdicts.jsonl"


def _line(item: BenchItem, verdict, tokens: int | None) -> str:
    return json.dumps({"id": item.id, "problem_id": item.problem.id, "human": item.human, "score": verdict.score,
                       "error": verdict.error, "origin": verdict.origin, "latency_s": round(verdict.latency_s, 4),
                       "attempts": verdict.attempts, "tokens": tokens, "raw": verdict.raw}, ensure_ascii=False)


def _grade(judge: BaseJudge, items: list[BenchItem], path: Path, batch_size: int, label: str) -> dict[str, Any]:
    """Grades the items without a successful verdict in ``path``; returns timing."""
    done = {pid for pid, row in read_verdicts(path).items() if row.get("error") is None}
    todo = [item for item in items if item.id not in done]
    meter_judge(judge)
    grade_s = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            t0 = time.perf_counter()
            verdicts = judge.grade([GradingItem(item.problem, item.proof) for item in batch])
            grade_s += time.perf_counter() - t0
            tokens = tokens_per_item(judge, verdicts)
            out.write("".join(_line(i, v, t) + "\n" for i, v, t in zip(batch, verdicts, tokens, strict=True)))
            out.flush()
            os.fsync(out.fileno())
            print(f"{label}: graded {min(start + batch_size, len(todo))}/{len(todo)} "
                  f"({len(items) - len(todo)} already done)", flush=True)
    return {"graded": len(todo), "grade_s": grade_s}


def _rows(items: list[BenchItem], path: Path) -> list[ScoredRow]:
    lines = read_verdicts(path)
    rows = []
    for item in items:
        line = lines[item.id]  # _grade wrote one for every item
        error = line.get("error")
        rows.append(ScoredRow(item.problem.id, item.human, None if error else line["score"],
                              None if not error else str(error).split(":", 1)[0].strip(), line.get("tokens")))
    return rows


def _per_problem(rows: list[ScoredRow], problems: list[str], table: dict) -> list[dict[str, Any]]:
    by: dict[str, list[ScoredRow]] = {}
    for r in rows:
        by.setdefault(r.problem, []).append(r)
    out = []
    for p, pid in enumerate(problems):
        group, n = by[pid], table["n"][p]
        graded = [r.grade for r in group if r.grade is not None]
        pairs = bool(table["has_pairs"][p])
        out.append({"problem": pid, "proofs": len(group), "human_mean": sum(r.human for r in group) / len(group),
                    "grader_mean": sum(graded) / len(graded) if graded else None,
                    "mae": table["abs_err"][p] / n if n else None,
                    "mean_signed_error": table["signed_err"][p] / n if n else None,
                    "advantage_error": float(table["adv_err"][p]) if pairs else None,
                    "order_consistency": float(table["pairs_sign"][p]) if pairs else None,
                    "failures": int(table["failures"][p])})
    return out


def measure(rows: list[ScoredRow], failures: str = "zero", n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict[str, Any]:
    """Every metric of one judge's rows, with intervals, the confusion table and the
    per-problem breakdown (the ``judges.<label>`` entry of ``metrics.json``)."""
    problems, table = problem_table(rows, failures)
    tokens = [r.tokens for r in rows if r.tokens is not None]
    return {
        "metrics": point_estimates(table),
        "intervals": bootstrap.intervals(table, n_boot, seed, level),
        "proofs": len(rows), "problems": len(problems),
        "failures_by_kind": dict(Counter(r.error_kind for r in rows if r.grade is None)),
        "tokens_counted": len(tokens), "tokens_p95": percentile(tokens, 0.95),
        "tokens_max": max(tokens) if tokens else None,
        "confusion": confusion(rows),
        "per_problem": _per_problem(rows, problems, table),
        "table": {"problems": problems, **{k: v.tolist() for k, v in table.items()}},
    }


def judge_bench(
    judges: dict[str, BaseJudge] | None = None,
    input: str = "demo",
    output_dir: str = "runs/judge_bench",
    layout: str = "jsonl",
    id_column: str | None = None,
    problem_id_column: str | None = None,
    problem_column: str | None = None,
    proof_column: str | None = None,
    human_column: str | None = None,
    rubric_column: str | None = None,
    reference_column: str | None = None,
    split: str = "train",
    config_name: str | None = None,
    failures: str = "zero",
    batch_size: int = 64,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    plots: bool = True,
    on_bad_row: str = "error",
    compare: list[str] | None = None,
) -> dict[str, Any]:
    """Measures judges against human grades and writes a report.

    Args:
        judges: Label -> judge (``LLMJudge``, ``RuleJudge``, ``JudgeEnsemble``...); the
            first is the baseline of the paired differences.
        input: ``demo`` (the shipped human-graded demo set), a local JSONL, JSON, CSV or
            Parquet file, or a hub dataset id.
        output_dir: Where ``<label>/verdicts.jsonl``, ``report.md``, ``metrics.json`` and
            the PNGs go; a rerun into the same directory resumes.
        layout: Column mapping: ``jsonl``, ``proofbench`` or ``gradingbench`` (see
            ``judging/bench/data.py``).
        id_column: Per-proof id column (null: the layout's; ``""``: number rows by position).
        problem_id_column: Problem id column (null: the layout's).
        problem_column: Problem statement column (null: the layout's).
        proof_column: Graded proof column (null: the layout's).
        human_column: Human grade column, 0 to 7 (null: the layout's).
        rubric_column: Rubric column (null: the layout's; ``""``: none).
        reference_column: Reference solution column (null: the layout's; ``""``: none).
        split, config_name: Of a hub dataset.
        failures: How a proof without a verdict enters the agreement metrics:
            ``zero`` (scored 0, as the released code and RL's on_failure: zero) or
            ``drop`` (left out). The failure rate counts failures either way.
        batch_size: Proofs per ``judge.grade`` call (the client runs them concurrently).
        n_boot, seed, level: Bootstrap replicates over problems, their seed, and the
            interval's coverage.
        plots: Write the confusion heatmap and the error histogram (matplotlib).
        on_bad_row: ``error`` or ``skip`` (``data/bad_rows.py``).
        compare: Two earlier runs' ``metrics.json`` (or their directories): write a
            comparison into ``output_dir`` instead of grading.

    Returns:
        What ``metrics.json`` holds (or the comparison).
    """
    t_start = time.perf_counter()
    out_dir = Path(output_dir)
    if compare is not None:
        if len(compare) != 2:
            raise ValueError(f"--compare takes two earlier runs (metrics.json or its directory), got {len(compare)}")
        return report.compare_runs(compare[0], compare[1], out_dir, n_boot, seed, level)
    if not judges:
        raise ValueError("qed judge bench needs --judges (label -> judge; see configs/judge/bench_demo.yaml) "
                         "or --compare '[A,B]'")
    if bad_labels := [lb for lb in judges if not _LABEL.fullmatch(lb)]:
        raise ValueError(f"judge labels name directories: letters, digits, '_', '.', '-' only; got {bad_labels}")
    if failures not in FAILURE_POLICIES:
        raise ValueError(f"failures must be one of {sorted(FAILURE_POLICIES)}, got {failures!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    columns = dict(id=id_column, problem_id=problem_id_column, problem=problem_column, proof=proof_column,
                   human=human_column, rubric=rubric_column, reference=reference_column)
    lay = layout_with(layout, **columns)
    bad = BadRows(on_bad_row, input)
    items = load_items(input, lay, bad, split=split, config_name=config_name)
    # every judge grades the same proofs: a problem one of them cannot take is a bad row for all
    fields = {"statement": lay.problem, "rubric": lay.rubric, "reference_solution": lay.reference}
    problems = [item.problem for item in items]
    for judge in judges.values():
        problems = problems_for_judge(problems, judge, fields, bad)
    keep = {id(p) for p in problems}
    items = [item for item in items if id(item.problem) in keep]
    if not items:
        raise bad.nothing_left("human-graded proofs the judges can grade")
    if bad.total:
        print(f"{input}: {bad.describe()}", flush=True)
    results: dict[str, Any] = {}
    timing = {"grade_s": 0.0, "graded": 0}
    for label, judge in judges.items():
        path = out_dir / label / VERDICTS_FILE
        took = _grade(judge, items, path, batch_size, label)
        timing["grade_s"] += took["grade_s"]
        timing["graded"] += took["graded"]
        results[label] = measure(_rows(items, path), failures, n_boot, seed, level)
        results[label].update(graded_this_run=took["graded"], grade_s=took["grade_s"],
                              wall_s_per_proof=took["grade_s"] / took["graded"] if took["graded"] else None,
                              judge=type(judge).__name__)
    labels = list(results)
    tables = {lb: {k: np.asarray(v) for k, v in results[lb]["table"].items() if k != "problems"}
              for lb in labels}
    paired = {lb: bootstrap.paired_differences(tables[lb], tables[labels[0]], n_boot, seed, level)
              for lb in labels[1:]}
    summary = {"input": input, "layout": layout, "columns": {k: v for k, v in vars(lay).items()},
               "failures": failures, "failures_means": FAILURE_POLICIES[failures], "n_boot": n_boot, "seed": seed,
               "level": level, "proofs": len(items), "problems": len({i.problem.id for i in items}),
               "skipped_rows": bad.total, "skipped_by_reason": dict(bad.counts), "judges": results,
               "paired_vs": labels[0], "paired": paired}
    timing["bench_s"] = time.perf_counter() - t_start  # everything before the report
    summary["timing"] = timing
    report.write_report(summary, out_dir, plots=plots)
    summary["timing"]["total_s"] = time.perf_counter() - t_start
    (out_dir / METRICS_FILE).write_text(json.dumps(summary, indent=1, default=list) + "\n")
    print(f"report: {out_dir / report.REPORT_FILE}", flush=True)
    return summary
