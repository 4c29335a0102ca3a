"""Human-graded data for ``qed judge bench``: layouts, the shipped demo set, bad rows."""
from __future__ import annotations

import json

import pytest

from qed_lightning.data.bad_rows import BadRows, DataSourceError
from qed_lightning.judging.bench.data import DEMO_SET, LAYOUTS, layout_with, load_items


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_shipped_demo_set_is_human_graded_and_justified():
    items = load_items("demo", LAYOUTS["jsonl"], BadRows())
    assert len(items) == 18 and len({i.problem.id for i in items}) == 4
    assert all(float(i.human).is_integer() and 0 <= i.human <= 7 for i in items)
    assert all(i.problem.rubric for i in items)
    rows = [json.loads(line) for line in DEMO_SET.read_text().splitlines()]
    assert all(len(r["justification"]) > 20 for r in rows)
    assert {r["human_score"] for r in rows} >= {0, 3, 6, 7}  # the whole scale, not only the ends


def test_proofbench_layout(tmp_path):
    src = write(tmp_path / "pb.jsonl", [{"problem_id": 12, "problem": "Prove X.", "model_solution": "Proof.",
                                         "marking_scheme": "7 pts", "reference_solution": "Ref.",
                                         "expert_rating": 6, "generator": "m"}])
    (item,) = load_items(src, LAYOUTS["proofbench"], BadRows())
    assert (item.id, item.problem.id, item.proof, item.human) == ("row1", "12", "Proof.", 6.0)
    assert (item.problem.rubric, item.problem.reference_solution) == ("7 pts", "Ref.")


def test_gradingbench_layout_renders_both_rubric_key_spellings(tmp_path):
    schema = [{"title": "Setup", "max_points": 2, "grading_scheme_desc": "Factor it."},
              {"title": "Finish", "points": 5, "desc": "Conclude."}]
    src = write(tmp_path / "gb.jsonl", [{"problem_idx": "a1", "text": "Prove Y.", "model_solution": "P.",
                                         "schema_0": schema, "points": 2}])
    (item,) = load_items(src, LAYOUTS["gradingbench"], BadRows())
    assert item.problem.id == "a1" and item.human == 2.0 and item.problem.reference_solution is None
    assert item.problem.rubric == ("# Setup (2 points)\nDescription: Factor it.\n"
                                   "# Finish (5 points)\nDescription: Conclude.")


def test_column_overrides(tmp_path):
    src = write(tmp_path / "x.jsonl", [{"q": "Prove Z.", "pid": "z", "answer": "A.", "grade": 3.5}])
    layout = layout_with("jsonl", problem="q", problem_id="pid", proof="answer", human="grade", id="", rubric="")
    (item,) = load_items(src, layout, BadRows())
    assert (item.id, item.problem.id, item.human, item.problem.rubric) == ("row1", "z", 3.5, None)
    with pytest.raises(ValueError, match="layout must be one of"):
        layout_with("nope")


@pytest.mark.parametrize("grade,message", [
    (8, "column 'human_score' is 8; expected a human grade from 0 to 7"),
    (-1, "is -1; expected a human grade"),
    ("good", "expected a number"),
    (None, "is empty"),
])
def test_a_bad_human_grade_names_file_row_and_column(tmp_path, grade, message):
    good = {"id": "a", "problem_id": "p", "problem": "Prove.", "proof": "P.", "human_score": 7}
    src = write(tmp_path / "h.jsonl", [good, {**good, "id": "b", "human_score": grade}])
    with pytest.raises(DataSourceError, match=rf"h\.jsonl:2: .*{message}"):
        load_items(src, LAYOUTS["jsonl"], BadRows("error"))
    bad = BadRows("skip")
    assert [i.id for i in load_items(src, LAYOUTS["jsonl"], bad)] == ["a"] and bad.total == 1


def test_duplicate_ids_are_an_error_under_skip_too(tmp_path):
    row = {"id": "a", "problem_id": "p", "problem": "Prove.", "proof": "P.", "human_score": 7}
    src = write(tmp_path / "d.jsonl", [row, row])
    with pytest.raises(DataSourceError, match="duplicate id 'a'"):
        load_items(src, LAYOUTS["jsonl"], BadRows("skip"))
