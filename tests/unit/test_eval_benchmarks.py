"""Benchmark loaders: the real IMO-Bench CSVs, filters, and bad input."""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from qed_lightning.data.sources import DataSourceError
from qed_lightning.evaluation.benchmarks import (
    BENCHMARKS, BenchmarkSpec, get_benchmark, load_benchmark, load_benchmark_with_report,
)
from qed_lightning.judging.templates import FIELDS as TEMPLATE_FIELDS, load_template

IMOBENCH = Path(__file__).resolve().parents[2].parent / "shared/data/imobench"
PROOFBENCH, ANSWERBENCH = IMOBENCH / "proofbench_v2.csv", IMOBENCH / "answerbench_v2.csv"
needs_imobench = pytest.mark.skipif(
    not (PROOFBENCH.is_file() and ANSWERBENCH.is_file()),
    reason=f"IMO-Bench CSVs not found under {IMOBENCH} (the project does not ship them)",
)
PB_HEADER = ["Problem ID", "Problem", "Solution", "Grading guidelines", "Category", "Level", "Short Answer", "Source"]


def write_csv(path: Path, rows: list[list[str]], header=PB_HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def pb_row(pid: str, problem="Prove it.", solution="Because.", guidelines="(Partial) x", level="IMO-easy"):
    return [pid, problem, solution, guidelines, "Algebra", level, "", "Novel Problem"]


@pytest.fixture(scope="module")
def proofbench():
    return load_benchmark("imo_proofbench", str(PROOFBENCH))


@needs_imobench
def test_imo_proofbench_maps_every_field(proofbench):
    assert len(proofbench) == 60
    first = proofbench[0]
    assert first.id == "PB-Basic-001"
    assert first.statement.startswith("Determine all functions $f: \\mathbb{Z}")
    assert first.reference_solution.startswith("By taking $x = 0$")
    assert first.rubric.startswith("(Partial)")
    meta = first.metadata
    assert (meta["benchmark"], meta["category"], meta["level"], meta["subset"]) == (
        "imo_proofbench", "Algebra", "IMO-easy", "PB-Basic")
    assert meta["source"] == "(Modified) IMO 2019, P1" and meta["origin"] == "proofbench_v2.csv:2"
    assert meta["short_answer"].startswith("$f(x) = 0$")
    assert all(p.reference_solution and p.rubric and p.statement for p in proofbench)
    # Short Answer is blank for 33 proof problems: the key is absent, not "".
    assert sum("short_answer" in p.metadata for p in proofbench) == 27
    assert proofbench[-1].id == "PB-Advanced-030"


@needs_imobench
def test_imo_proofbench_filters(proofbench):
    src = str(PROOFBENCH)
    assert Counter(p.metadata["subset"] for p in proofbench) == {"PB-Basic": 30, "PB-Advanced": 30}
    assert len(load_benchmark("imo_proofbench", src, subsets=["PB-Advanced"])) == 30
    # The Level column is difficulty, not Basic/Advanced.
    assert Counter(p.metadata["level"] for p in proofbench) == {
        "IMO-easy": 24, "IMO-medium": 18, "IMO-hard": 10, "pre-IMO": 8}
    assert len(load_benchmark("imo_proofbench", src, levels=["IMO-hard"])) == 10
    assert len(load_benchmark("imo_proofbench", src, levels=["pre-IMO", "IMO-easy"])) == 32
    assert len(load_benchmark("imo_proofbench", src, categories=["Geometry"])) == 14
    both = load_benchmark("imo_proofbench", src, categories=["Algebra"], subsets=["PB-Basic"])
    assert both and all(p.metadata["category"] == "Algebra" and p.id.startswith("PB-Basic") for p in both)
    picked = load_benchmark("imo_proofbench", src, ids=["PB-Advanced-022", "PB-Basic-003"])
    assert [p.id for p in picked] == ["PB-Basic-003", "PB-Advanced-022"]  # source order
    assert [p.id for p in load_benchmark("imo_proofbench", src, limit=3)] == [
        "PB-Basic-001", "PB-Basic-002", "PB-Basic-003"]
    assert len(load_benchmark("imo_proofbench", src, subsets=["PB-Advanced"], limit=5)) == 5


@needs_imobench
def test_unknown_filter_values_are_named():
    with pytest.raises(ValueError, match=r"no problem has id \['PB-Basic-999', 'nope'\]"):
        load_benchmark("imo_proofbench", str(PROOFBENCH), ids=["PB-Basic-001", "PB-Basic-999", "nope"])
    with pytest.raises(ValueError, match=r"no problem has level \['PB-Basic'\].*IMO-easy"):
        load_benchmark("imo_proofbench", str(PROOFBENCH), levels=["PB-Basic"])


@needs_imobench
def test_answerbench_flags_its_malformed_row():
    # Upstream answerbench_v2.csv: imo-bench-algebra-036 lacks its Problem's closing
    # quote, so the answer ends up inside the problem and the other columns shift.
    # The record starts on line 150 (earlier cells span lines): the line an editor shows.
    with pytest.raises(DataSourceError, match=r"answerbench_v2\.csv:150: the row has 5 fields but the header has 6"):
        load_benchmark("answerbench", str(ANSWERBENCH))
    report = load_benchmark_with_report("answerbench", str(ANSWERBENCH), on_bad_row="skip")
    assert report.rows == 400 and len(report.problems) == 399 and len(report.skipped) == 1
    assert report.skipped[0].startswith("answerbench_v2.csv:150: ")
    assert report.skipped_by_reason == {"wrong_field_count": 1}
    problems = report.problems
    assert all(p.metadata["short_answer"] for p in problems)
    assert all(p.rubric is None and p.reference_solution is None for p in problems)
    first = problems[0]
    assert first.id == "imo-bench-algebra-001" and first.metadata["short_answer"] == "3"
    assert (first.metadata["category"], first.metadata["subcategory"], first.metadata["source"]) == (
        "Algebra", "Operation", "IMO Shortlist 2021")
    assert Counter(p.metadata["category"] for p in problems) == {
        "Algebra": 99, "Combinatorics": 100, "Geometry": 100, "Number theory": 100}
    assert len(load_benchmark("answerbench", str(ANSWERBENCH), on_bad_row="skip", categories=["Geometry"])) == 100


def test_missing_problem_names_file_and_row(tmp_path):
    path = write_csv(tmp_path / "pb.csv", [pb_row("A-1"), pb_row("A-2", problem="  "), pb_row("A-3")])
    with pytest.raises(DataSourceError, match=r"pb\.csv:3 \(id 'A-2'\): problem column 'Problem' is empty \(blank\)"):
        load_benchmark("imo_proofbench", str(path))
    report = load_benchmark_with_report("imo_proofbench", str(path), on_bad_row="skip")
    assert [p.id for p in report.problems] == ["A-1", "A-3"] and report.rows == 3
    assert report.skipped == ["pb.csv:3 (id 'A-2'): problem column 'Problem' is empty (blank); expected text"]


def test_missing_guidelines_or_solution_when_the_judge_needs_them(tmp_path):
    path = write_csv(tmp_path / "pb.csv", [pb_row("A-1", guidelines=""), pb_row("A-2", solution="")])
    with pytest.raises(DataSourceError, match=r"pb\.csv:2 .*'Grading guidelines'.*'imo_proofbench' needs it"):
        load_benchmark("imo_proofbench", str(path))
    with pytest.raises(DataSourceError, match=r"no usable problems of 'imo_proofbench': 2 bad rows skipped \(empty: 2\)"):
        load_benchmark_with_report("imo_proofbench", str(path), on_bad_row="skip")
    # A custom benchmark whose grading needs neither loads them as absent.
    problems = load_benchmark("custom", str(path), columns={"problem": "Problem", "id": "Problem ID",
                                                            "rubric": "Grading guidelines"})
    assert [p.rubric for p in problems] == [None, "(Partial) x"]


def test_answerbench_row_without_short_answer(tmp_path):
    header = ["Problem ID", "Problem", "Short Answer", "Category", "Subcategory", "Source"]
    path = write_csv(tmp_path / "ab.csv", [["q1", "Find x.", "", "Algebra", "Sequence", "ISL"]], header=header)
    with pytest.raises(DataSourceError, match=r"ab\.csv:2 \(id 'q1'\): short_answer column 'Short Answer' "
                                              r"is empty \(blank\) \(answer grading needs it\)"):
        load_benchmark("answerbench", str(path))


def test_unknown_column_lists_existing_columns(tmp_path):
    path = write_csv(tmp_path / "pb.csv", [pb_row("A-1")])
    with pytest.raises(DataSourceError, match=r"rubric='Marking scheme'.*columns: 'Problem ID', 'Problem', 'Solution'"):
        load_benchmark("imo_proofbench", str(path), columns={"rubric": "Marking scheme"})
    with pytest.raises(ValueError, match=r"unknown field 'probem'.*fields: problem, id"):
        load_benchmark("imo_proofbench", str(path), columns={"probem": "Problem"})
    # An optional metadata column the spec guesses may be absent; one the user names may not.
    lean = write_csv(tmp_path / "lean.csv", [["A-1", "P", "S", "G"]], header=PB_HEADER[:4])
    assert "category" not in load_benchmark("imo_proofbench", str(lean))[0].metadata
    with pytest.raises(DataSourceError, match="category='Category'"):
        load_benchmark("imo_proofbench", str(lean), columns={"category": "Category"})


def test_duplicate_ids_name_both_rows(tmp_path):
    path = write_csv(tmp_path / "pb.csv", [pb_row("A-1"), pb_row("A-2"), pb_row("A-1")])
    with pytest.raises(DataSourceError, match=r"pb\.csv:4: duplicate problem id 'A-1' \(first at pb\.csv:2\)"):
        load_benchmark("imo_proofbench", str(path), on_bad_row="skip")


def test_long_csv_row_is_bad(tmp_path):
    path = write_csv(tmp_path / "pb.csv", [pb_row("A-1"), pb_row("A-2") + ["extra"]])
    with pytest.raises(DataSourceError, match=r"pb\.csv:3: the row has 9 fields but the header has 8"):
        load_benchmark("imo_proofbench", str(path))


def test_jsonl_with_a_column_mapping(tmp_path):
    rows = [{"uid": 7, "question": "Show 1+1=2.", "scheme": [{"title": "Sum", "points": 7, "desc": "adds"}],
             "topic": "Algebra", "answer": "2"},
            {"uid": 8, "question": "Show 2+2=4.", "scheme": "7 points: adds", "topic": "Number theory"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    columns = {"id": "uid", "problem": "question", "rubric": "scheme", "category": "topic"}
    problems = load_benchmark("jsonl", str(path), columns=columns)
    assert [p.id for p in problems] == ["7", "8"]
    assert problems[0].rubric == "# Sum (7 points)\nDescription: adds"  # QED-Nano's schema rendering
    assert problems[0].metadata == {"benchmark": "custom", "origin": "mine.jsonl:1", "category": "Algebra"}
    assert [p.id for p in load_benchmark("jsonl", str(path), columns=columns, categories=["Number theory"])] == ["8"]
    # An answer benchmark of one's own: a spec derived from the registry's.
    spec = replace(BENCHMARKS["answerbench"], name="my_answers", optional=())
    mine = load_benchmark(spec, str(path), columns={"id": "uid", "problem": "question", "short_answer": "answer",
                                                    "category": None, "subcategory": None, "source": None},
                          on_bad_row="skip")
    assert [(p.id, p.metadata["short_answer"]) for p in mine] == [("7", "2")]
    with pytest.raises(ValueError, match="no default source"):
        load_benchmark("jsonl")


def test_demo_slice():
    problems = load_benchmark("demo")
    assert [p.id for p in problems] == [f"demo-0{i}" for i in range(25, 31)]  # last 6 of 30
    assert all(p.rubric and p.metadata["benchmark"] == "demo" for p in problems)
    assert [p.id for p in load_benchmark("demo", limit=2)] == ["demo-025", "demo-026"]


def test_registry_matches_judge_templates():
    names = {"imo_proofbench", "proofbench", "answerbench", "fineproofs_rl_test", "demo", "custom", "jsonl"}
    assert names <= set(BENCHMARKS)
    assert get_benchmark("proofbench").columns["rubric"] == "grading_scheme"
    assert get_benchmark("fineproofs_rl_test").split == "test"
    assert get_benchmark("answerbench").kind == "answer" and get_benchmark("answerbench").judge_template is None
    for spec in BENCHMARKS.values():
        if spec.judge_template:  # every Problem field the template fills must be a required field
            placeholders = load_template(spec.judge_template).placeholders
            needed = {TEMPLATE_FIELDS[ph] for ph in placeholders} - {None, "statement"}
            assert needed <= set(spec.required), spec.name
    with pytest.raises(ValueError, match="unknown benchmark 'imo'"):
        get_benchmark("imo")
    with pytest.raises(ValueError, match="kind must be"):
        BenchmarkSpec("x", "essay", None, {"problem": "p"})
