"""The benchmark harness's pure functions (bench/harness.py): ABBA order, medians and
ratios, markdown tables and the results writer."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import (command_line, fmt, interleaved, jsonable_args, median, pct, ratio,  # noqa: E402
                     ratio_summary, table, write_results)


def test_interleaved_reverses_every_other_round():
    assert interleaved(["a", "b", "c"], 3) == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"),
                                               (2, "a"), (2, "b"), (2, "c")]
    assert interleaved((1, 2), 2) == [(0, 1), (0, 2), (1, 2), (1, 1)]
    assert interleaved(["a"], 0) == []


def test_medians_and_ratios():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert pct([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert pct([0.0, 10.0], 0.95) == 9.5
    assert pct([7.0], 0.95) == 7.0
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(3.0, 0.0) is None and ratio(None, 2.0) is None
    assert ratio_summary([1.0, 3.0, 2.0]) == {"ratio": 2.0, "ratio_min": 1.0, "ratio_max": 3.0}


def test_formatting():
    assert fmt(None) == "-"
    assert fmt(1.2345) == "1.23"
    assert fmt(0.1234, ".1%") == "12.3%"
    assert table(["name", "x"], [["a", 1], ["b", 2.5]]) == [
        "| name | x |", "| --- | ---: |", "| a | 1 |", "| b | 2.5 |", ""]
    assert command_line("rl", ["--quick", "--out", "o"]) == "python bench/rl.py --quick --out o"
    assert jsonable_args(argparse.Namespace(out=Path("a/b"), n=3)) == {"out": "a/b", "n": 3}


def test_write_results(tmp_path):
    md, js = write_results(tmp_path / "new", "x", ["# T", "", "row"], {"a": 1, "b": [1.5]})
    assert md.read_text() == "# T\n\nrow\n"
    assert js.read_text() == '{\n  "a": 1,\n  "b": [\n    1.5\n  ]\n}\n'
    md, js = write_results(tmp_path, "y", "as is", {"s": {2, 1}}, indent=1, default=sorted)
    assert md.read_text() == "as is" and json.loads(js.read_text()) == {"s": [1, 2]}
    md, js = write_results(tmp_path, "z", None, [])
    assert md is None and not (tmp_path / "z.md").exists() and js.read_text() == "[]\n"
