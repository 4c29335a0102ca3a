"""The bad-row policy, typed cells and the readers: parse errors are rows, not crashes;
every message names the file, row and column; an empty file is an error naming it."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from qed_lightning.data.bad_rows import BadRowError, BadRows, DataSourceError, check_policy
from qed_lightning.data.cells import id_cell, number_cell, text_cell
from qed_lightning.data.sources import SourceRow, iter_rows

CORPUS = Path(__file__).resolve().parents[1] / "data" / "malformed"


def row(values, origin="f.jsonl:4"):
    return SourceRow(origin, 4, values)


def test_policy_vocabulary():
    assert check_policy("error") == "error" and check_policy("skip") == "skip"
    with pytest.raises(ValueError, match=r"'raise' is now called 'error' \(set on_bad_row: error\)"):
        check_policy("raise")
    with pytest.raises(ValueError, match=r"on_bad_row must be one of \('error', 'skip'\), got 'drop'"):
        check_policy("drop")


def test_error_raises_the_row_with_a_hint_and_skip_counts_and_logs_the_first_few(caplog):
    err = BadRowError("f.jsonl:4", "empty", "column 'proof' is empty (null); expected text", "proof")
    with pytest.raises(BadRowError, match=r"^f.jsonl:4: column 'proof' is empty \(null\); expected text "
                                          r"\(on_bad_row: skip would leave such rows out and count them\)$"):
        BadRows("error", "f.jsonl").add(err)
    bad = BadRows("skip", "f.jsonl", log_first=2)
    with caplog.at_level(logging.WARNING, logger="qed_lightning.data.bad_rows"):
        for i in range(4):
            bad.add(BadRowError(f"f.jsonl:{i + 1}", "empty", "column 'proof' is empty (null); expected text"))
        bad.add(BadRowError("f.jsonl:9", "invalid_json", "not valid JSON"))
    assert bad.counts == {"empty": 4, "invalid_json": 1} and bad.total == 5
    assert bad.first["empty"] == ["f.jsonl:1: column 'proof' is empty (null); expected text",
                                  "f.jsonl:2: column 'proof' is empty (null); expected text"]
    logged = [r.getMessage() for r in caplog.records]
    assert sum("skipping bad row (empty)" in m for m in logged) == 2  # the first two, then only counted
    assert sum("more rows skipped as empty" in m for m in logged) == 1
    assert bad.describe() == "5 bad rows skipped (empty: 4, invalid_json: 1)"
    assert bad.metrics() == {"data/skipped_rows": 5.0, "data/skipped/empty": 4.0, "data/skipped/invalid_json": 1.0}
    with pytest.raises(ValueError, match="unknown bad-row reason 'oops'"):
        BadRowError("x", "oops", "y")


@pytest.mark.parametrize("values, reason, message", [
    ({"p": None}, "empty", "f.jsonl:4: column 'p' is empty (null); expected text"),
    ({"p": " \n"}, "empty", "f.jsonl:4: column 'p' is empty (blank); expected text"),
    ({"p": float("nan")}, "empty", "f.jsonl:4: column 'p' is empty (NaN); expected text"),
    ({"q": "x"}, "missing_column", "f.jsonl:4: column 'p' is missing (the row has: 'q')"),
    ({"p": ["a", "b"]}, "wrong_type", "f.jsonl:4: column 'p' holds a list (['a', 'b']); expected text"),
    ({"p": {"a": 1}}, "wrong_type", "f.jsonl:4: column 'p' holds a dict ({'a': 1}); expected text"),
    ({"p": 3}, "wrong_type", "f.jsonl:4: column 'p' holds an int (3); expected text"),
    ({"p": True}, "wrong_type", "f.jsonl:4: column 'p' holds a bool (True); expected text"),
])
def test_text_cells_name_row_column_and_expectation(values, reason, message):
    with pytest.raises(BadRowError) as caught:
        text_cell(row(values), "p", required=True)
    assert (caught.value.reason, str(caught.value), caught.value.column) == (reason, message, "p")


def test_text_cell_options():
    assert text_cell(row({"p": None}), "p", required=False) is None
    assert text_cell(row({}), "p", required=False) is None
    assert text_cell(row({"p": 2}), "p", required=True, numbers=True) == "2"
    with pytest.raises(BadRowError, match="expected text or a number"):
        text_cell(row({"p": math.inf}), "p", required=True, numbers=True)
    schema = [{"title": "Bound", "points": 7, "desc": "shows n <= 3"}]
    assert text_cell(row({"r": schema}), "r", required=True, schema=True) == "# Bound (7 points)\nDescription: shows n <= 3"
    with pytest.raises(BadRowError, match=r"holds a list \(\[\{'title': 'Bound'"):
        text_cell(row({"r": schema}), "r", required=True)  # schema lists only where a rubric is read
    assert text_cell(row({"proof": ""}), "proof", required=True, blank_ok=True) == ""
    with pytest.raises(BadRowError, match=r"rubric column 'G' is empty \(blank\) \(judge needs it\); expected text"):
        text_cell(row({"G": ""}), "G", required=True, field="rubric", why=" (judge needs it)")


def test_id_and_number_cells():
    assert id_cell(row({"id": 7}), "id") == "7" and id_cell(row({"id": " a-1 "}), "id") == "a-1"
    with pytest.raises(BadRowError, match=r"column 'id' holds a float \(4.5\); expected text or an integer"):
        id_cell(row({"id": 4.5}), "id")
    assert number_cell(row({"m": "0.25"}), "m") == 0.25 and number_cell(row({"m": 3}), "m") == 3.0
    for value, reason, text in [(float("nan"), "not_finite", "column 'm' is nan; expected a finite number"),
                                ("inf", "not_finite", "column 'm' is inf; expected a finite number"),
                                ("high", "wrong_type", "column 'm' is 'high'; expected a number"),
                                (None, "empty", "column 'm' is empty (null); expected a number"),
                                ([1], "wrong_type", "column 'm' holds a list ([1]); expected a number")]:
        with pytest.raises(BadRowError) as caught:
            number_cell(row({"m": value}), "m")
        assert caught.value.reason == reason and str(caught.value) == f"f.jsonl:4: {text}"


@pytest.mark.parametrize("name", ["empty.jsonl", "blank.jsonl", "empty.csv", "header_only.csv", "empty.json",
                                  "empty_list.json"])
def test_an_empty_file_is_an_error_naming_it(name):
    with pytest.raises(DataSourceError, match=rf"{name}: the file has no rows$"):
        list(iter_rows(str(CORPUS / name)))


def test_jsonl_parse_errors_are_rows_in_place():
    rows = list(iter_rows(str(CORPUS / "sft.jsonl")))
    assert len(rows) == 15 and [r.origin for r in rows] == [f"sft.jsonl:{i}" for i in range(1, 16)]
    assert (CORPUS / "sft.jsonl").read_bytes()[-1:] != b"\n"  # the corpus keeps its cut last line
    errors = {r.origin: (r.error.reason, r.error.detail) for r in rows if r.error}
    assert errors == {
        "sft.jsonl:11": ("invalid_json", "not valid JSON (Expecting value, column 54)"),
        "sft.jsonl:12": ("not_an_object", "expected a JSON object, got list"),
        "sft.jsonl:15": ("invalid_json", "not valid JSON (Unterminated string, column 36); "
                                         "the file's last line is cut short (an interrupted write?)"),
    }
    with pytest.raises(BadRowError, match="sft.jsonl:11: not valid JSON"):
        rows[10].check()


def test_csv_rows_are_named_by_the_line_they_start_on(tmp_path):
    rows = list(iter_rows(str(CORPUS / "sft.csv")))
    assert [(r.origin, r.error.reason if r.error else None) for r in rows] == [
        ("sft.csv:2", None), ("sft.csv:3", None), ("sft.csv:4", "wrong_field_count"),
        ("sft.csv:5", None),  # its problem cell spans lines 5-6
        ("sft.csv:7", "wrong_field_count"), ("sft.csv:8", None)]
    assert str(rows[2].error) == ("sft.csv:4: the row has 2 fields but the header has 3 (an unbalanced quote or "
                                  "a missing separator?); its columns cannot be trusted")
    assert rows[3].values["problem"] == "Prove that 6\nis even."
    twice = tmp_path / "twice.csv"
    twice.write_text("problem,proof,problem\na,b,c\n")
    with pytest.raises(DataSourceError, match=r"twice.csv: the header names \['problem'\] more than once"):
        list(iter_rows(str(twice)))


def test_json_lists_name_each_object_by_its_line(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[\n  {"a": 1},\n  7,\n\n  {"a": 2,\n   "b": 3}\n]\n')
    rows = list(iter_rows(str(path)))
    assert [(r.origin, r.index, r.values, r.error and r.error.reason) for r in rows] == [
        ("list.json:2", 0, {"a": 1}, None), ("list.json:3", 1, {}, "not_an_object"),
        ("list.json:5", 2, {"a": 2, "b": 3}, None)]
    path.write_text('[\n  {"a": 1},\n  {"a": 2\n]\n')
    with pytest.raises(DataSourceError, match=r"list.json: not valid JSON at line 4, column 1 .*read as a whole"):
        list(iter_rows(str(path)))
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(DataSourceError, match=r"expected a JSON list of objects \(for one object per line, use .jsonl\)"):
        list(iter_rows(str(path)))


def test_parquet_rows_are_one_based(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    import pyarrow as pa

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"problem": ["a", None]}), path)
    rows = list(iter_rows(str(path)))
    assert [r.origin for r in rows] == ["d.parquet row 1", "d.parquet row 2"]
    with pytest.raises(BadRowError, match=r"^d.parquet row 2: column 'problem' is empty \(null\); expected text$"):
        text_cell(rows[1], "problem", required=True)
