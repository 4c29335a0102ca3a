"""Evaluation benchmarks as data sources: a registry of specs (where the rows are,
which column holds what, how the benchmark is graded) and ``load_benchmark``, which
turns a file or hub dataset into ``Problem``s, filtered and sliced.

The benchmark files are not shipped: give a path or a hub id as ``source``. Every
bad row is an error naming its file, row and column, or, with ``on_bad_row="skip"``,
is skipped and counted by reason in the ``BenchmarkLoad`` report (and logged), never
dropped silently (``data/bad_rows.py``). Given the judge, a problem lacking what its
template fills in is a bad row too, found before any generation. Duplicate ids are an
error under both settings (they key the evaluation store).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from qed_lightning.contracts import Problem
from qed_lightning.data.bad_rows import BadRowError, BadRows
from qed_lightning.data.cells import id_cell, text_cell
from qed_lightning.data.judge_ready import problems_for_judge
from qed_lightning.data.sources import DataSourceError, SourceRow, iter_rows
from qed_lightning.evaluation.columns import FIELDS, METADATA_FIELDS, Names, merge_columns, resolve_columns

__all__ = ["BENCHMARKS", "BenchmarkLoad", "BenchmarkSpec", "get_benchmark", "load_benchmark",
           "load_benchmark_with_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read and grade one benchmark.

    Args:
        name: Registry key; also ``Problem.metadata["benchmark"]`` and ``EvalRecord.benchmark``.
        kind: ``proof`` (judged 0..7) or ``answer`` (short answer checked against ``short_answer``).
        source: Default path or hub id; None when the user must give one.
        columns: Field -> column name, or a tuple of alternatives (fields: ``columns.FIELDS``).
        split: Default hub split (ignored for local files).
        judge_template: Judge prompt name (``judging.templates``); None for answer benchmarks.
        required: Fields a row must fill, beyond ``problem`` (and ``id`` when mapped):
            what the judge template's prompt needs.
        optional: Mapped metadata fields a source may lack (left out instead of an error).
        subset_pattern: Regex whose group 1, matched on the id, is ``metadata["subset"]``.
        tail: Keep only the last ``tail`` rows (the demo's evaluation slice).
    """

    name: str
    kind: Literal["proof", "answer"]
    source: str | None
    columns: Mapping[str, Names]
    split: str = "train"
    judge_template: str | None = None
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    subset_pattern: str | None = None
    tail: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("proof", "answer"):
            raise ValueError(f"benchmark {self.name!r}: kind must be 'proof' or 'answer', got {self.kind!r}")
        if bad := sorted(set(self.columns) - set(FIELDS)):
            raise ValueError(f"benchmark {self.name!r}: unknown fields {bad} in columns (fields: {', '.join(FIELDS)})")

    @property
    def grader(self) -> str:
        """What grades this benchmark, for error messages."""
        return f"judge template {self.judge_template!r}" if self.judge_template else f"{self.kind} grading"


_IMOBENCH_META = dict(category=("Category", "category"), source=("Source", "source"))

BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in (
    # IMO-ProofBench (60 = 30 PB-Basic + 30 PB-Advanced): the public proofbench_v2.csv
    # (google-deepmind/superhuman, imobench/) or its hub copy, whose schema is third-party
    # reported (question_id, problem, solution, grading_guidelines, ...). Pin ``revision``.
    BenchmarkSpec(
        "imo_proofbench", "proof", "lm-provers/IMOProofBench",
        dict(id=("Problem ID", "question_id", "problem_id"), problem=("Problem", "problem"),
             reference_solution=("Solution", "solution"), rubric=("Grading guidelines", "grading_guidelines"),
             short_answer=("Short Answer", "answer"), level=("Level", "level"), **_IMOBENCH_META),
        judge_template="imo_proofbench", required=("reference_solution", "rubric"),
        optional=("short_answer", "category", "level", "source"), subset_pattern=r"^(PB-[A-Za-z]+)-\d+$",
    ),
    # ProofBench (Ma et al.): splits 24_25 (70), other (75), train (145, all); which one the
    # paper reports is unverified. The marking scheme is the rubric.
    BenchmarkSpec(
        "proofbench", "proof", "lm-provers/ProofBench",
        dict(id="problem_id", problem="problem", rubric="grading_scheme", reference_solution="solution"),
        judge_template="proofbench", required=("rubric",), optional=("reference_solution",),
    ),
    # IMO-AnswerBench (400 short answers; accuracy): the public answerbench_v2.csv or a hub
    # copy (the QED-Nano eval code's default id; its column names are unverified).
    BenchmarkSpec(
        "answerbench", "answer", "lm-provers/IMOBench-FinalAnswer",
        dict(id=("Problem ID", "problem_id"), problem=("Problem", "problem"),
             short_answer=("Short Answer", "answer", "short_answer"),
             subcategory=("Subcategory", "subcategory"), **_IMOBENCH_META),
        required=("short_answer",), optional=("category", "source", "subcategory"),
    ),
    # FineProofs-RL-test: its own hub repo (test split, 128 rows per third parties), not a
    # split of FineProofs-RL. No id column: ids are row indices. Graded like RL rewards.
    BenchmarkSpec(
        "fineproofs_rl_test", "proof", "lm-provers/FineProofs-RL-test",
        dict(problem="problem", rubric="rubrics", source="source"),
        split="test", judge_template="rl_strict", required=("rubric",), optional=("source",),
    ),
    # The shipped demo problems' last 6. NOT held out: configs/demo/rl.yaml trains on all 30,
    # so this is a smoke test of the evaluation path, not a generalisation measure.
    BenchmarkSpec(
        "demo", "proof", "demo", dict(id="id", problem="problem", rubric="rubric", category="category"),
        judge_template="rl_strict", required=("rubric",), optional=("category",), tail=6,
    ),
    # A user's file or hub dataset: give ``source`` and ``columns`` (``problem`` is the default).
    BenchmarkSpec("custom", "proof", None, dict(problem="problem")),
)}
BENCHMARKS["jsonl"] = BENCHMARKS["custom"]


@dataclass
class BenchmarkLoad:
    """What ``load_benchmark_with_report`` returns: the problems, the number of rows
    read, each skipped row as ``"<file:row>: <why>"``, and the skips by reason."""

    problems: list[Problem]
    rows: int = 0
    skipped: list[str] = field(default_factory=list)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)


def get_benchmark(name: str | BenchmarkSpec) -> BenchmarkSpec:
    if isinstance(name, BenchmarkSpec):
        return name
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def _named(row: SourceRow, cols: dict[str, str]) -> SourceRow:
    # The id beside the row: a CSV record's first line is easy to miss when cells span lines.
    value = row.values.get(cols["id"]) if "id" in cols else None
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return dataclasses.replace(row, origin=f"{row.origin} (id {str(value).strip()!r})")
    return row


def _row_problem(spec: BenchmarkSpec, cols: dict[str, str], row: SourceRow) -> Problem:
    origin, row = row.origin, _named(row, cols)
    text: dict[str, Any] = {}
    for f, column in cols.items():
        required = f == "problem" or f in spec.required
        why = f" ({spec.grader} needs it)" if f in spec.required else ""
        if f == "id":
            text[f] = id_cell(row, column, field=f)
        else:
            text[f] = text_cell(row, column, required=required, field=f, why=why,
                                numbers=f in METADATA_FIELDS, schema=f == "rubric")
    pid = text["id"] if "id" in cols else f"row{row.index}"
    meta = {"benchmark": spec.name, "origin": origin}
    meta.update({f: text[f] for f in METADATA_FIELDS if text.get(f) is not None})
    if spec.subset_pattern and (m := re.match(spec.subset_pattern, pid)):
        meta["subset"] = m.group(1)
    return Problem(id=pid, statement=text["problem"], rubric=text.get("rubric"),
                   reference_solution=text.get("reference_solution"), metadata=meta)


def _keep(problems: list[Problem], key: str, wanted: Iterable[str] | None, skipped: int) -> list[Problem]:
    if wanted is None:
        return problems
    wanted = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]  # ids may come as ints
    have = {p.id if key == "id" else p.metadata.get(key) for p in problems} - {None}
    if unknown := [w for w in wanted if w not in have]:
        note = f"; {skipped} bad rows were skipped" if skipped else ""
        shown = sorted(str(h) for h in have) if key != "id" else f"{len(have)} ids"
        raise ValueError(f"no problem has {key} {unknown} (there are: {shown}{note})")
    return [p for p in problems if (p.id if key == "id" else p.metadata.get(key)) in set(wanted)]


def load_benchmark_with_report(
    name: str | BenchmarkSpec = "imo_proofbench",
    source: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    columns: Mapping[str, Names | None] | None = None,
    categories: Sequence[str] | None = None,
    levels: Sequence[str] | None = None,
    subsets: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    on_bad_row: str = "error",
    judge: Any = None,
) -> BenchmarkLoad:
    """``load_benchmark``, returning the skipped rows too (see there for the arguments)."""
    spec = get_benchmark(name)
    bad = BadRows(on_bad_row)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    source = source or spec.source
    if source is None:
        raise ValueError(f"benchmark {spec.name!r} has no default source: give source= (a file path or hub id)")
    bad.source = source
    mapping = merge_columns(spec.columns, columns)
    if "problem" not in mapping:
        raise ValueError(f"benchmark {spec.name!r}: the column mapping has no 'problem' column")
    if unmapped := [f for f in spec.required if f not in mapping]:
        raise ValueError(f"benchmark {spec.name!r} needs {unmapped} mapped to columns "
                         f"({spec.grader} uses them)")
    lenient = [f for f in spec.optional if f not in (columns or {})]  # a user's own column must exist
    report, seen, cols = BenchmarkLoad(problems=[]), {}, None

    def skip(err: BadRowError) -> None:
        bad.add(err)  # raises under on_bad_row: error
        report.skipped.append(str(err))

    for row in iter_rows(source, split=split or spec.split, revision=revision):
        report.rows += 1
        if row.error is not None:
            skip(row.error)
            continue
        if cols is None:  # the first parsed row has the columns (every CSV row, the header's)
            cols = resolve_columns(mapping, list(row.values), f"{source} ({spec.name})", lenient)
        try:
            problem = _row_problem(spec, cols, row)
        except BadRowError as err:
            skip(err)
            continue
        if problem.id in seen:  # never skipped: which of the two is right is the user's call
            raise DataSourceError(f"{row.origin}: duplicate problem id {problem.id!r} (first at {seen[problem.id]}); "
                                  "ids key the evaluation's records, so this is an error under on_bad_row: skip too")
        seen[problem.id] = row.origin
        report.problems.append(problem)
    problems = report.problems[-spec.tail:] if spec.tail else report.problems
    for key, wanted in (("category", categories), ("level", levels), ("subset", subsets), ("id", ids)):
        problems = _keep(problems, key, wanted, len(report.skipped))
    if judge is not None:  # before any generation: what the judge's template fills in
        attrs = {"statement": "problem", "rubric": "rubric", "reference_solution": "reference_solution"}
        checked = BadRows(on_bad_row, source, log_first=len(problems))  # keeps every message
        problems = problems_for_judge(problems, judge, {a: cols.get(f) if cols else None for a, f in attrs.items()},
                                      checked)
        for reason, messages in checked.first.items():
            bad.counts[reason] += checked.counts[reason]
            report.skipped += messages
    report.problems = problems[:limit] if limit else problems
    report.skipped_by_reason = dict(bad.counts)
    if not report.problems and bad.total:
        raise bad.nothing_left(f"problems of {spec.name!r}")
    if bad.total:
        log.warning("%s: %s of %d rows", source, bad.describe(), report.rows)
    return report


def load_benchmark(
    name: str | BenchmarkSpec = "imo_proofbench",
    source: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    columns: Mapping[str, Names | None] | None = None,
    categories: Sequence[str] | None = None,
    levels: Sequence[str] | None = None,
    subsets: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    on_bad_row: str = "error",
    judge: Any = None,
) -> list[Problem]:
    """The problems of a benchmark, in source order.

    Args:
        name: A ``BENCHMARKS`` key (``imo_proofbench``, ``proofbench``, ``answerbench``,
            ``fineproofs_rl_test``, ``demo``, ``custom``/``jsonl``) or a ``BenchmarkSpec``.
        source: Path (.csv/.jsonl/.json/.parquet) or hub id; default: the spec's.
        split, revision: Hub split (default: the spec's) and commit (pin it).
        columns: Field -> column overrides on top of the spec's (None unmaps a field).
        categories, levels, subsets, ids: Keep only these (``subsets``: ``PB-Basic`` /
            ``PB-Advanced`` on IMO-ProofBench); a value no problem has is an error.
        limit: Keep the first ``limit`` problems left after filtering.
        on_bad_row: ``error`` (default) or ``skip`` bad rows (a missing or empty needed
            field, a value of the wrong type, an unparseable line); skips are counted by
            reason and logged; ``load_benchmark_with_report`` also returns them.
        judge: The grader; a problem lacking what its template fills in is a bad row.
    """
    return load_benchmark_with_report(name, source, split, revision, columns, categories, levels,
                                      subsets, ids, limit, on_bad_row, judge).problems
