"""The resumable result store: newest line per key counts, a line cut by a kill is
ignored (its request is redone), and the next append starts on a line of its own."""
from __future__ import annotations

import json

from qed_lightning.data_pipeline.store import ResultStore


def test_newest_line_counts_and_failures_are_not_done(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path) as store:
        store.append({"key": "a#0", "error": "http_503: down"})
        store.append({"key": "b#0", "completion": "x", "error": None})
        assert not store.done("a#0") and store.done("b#0")
        store.append({"key": "a#0", "completion": "y", "error": None})
    reopened = ResultStore(path)
    assert reopened.done("a#0") and reopened.get("a#0")["completion"] == "y" and not reopened.done("c#0")
    reopened.close()


def test_a_line_cut_by_a_kill_is_dropped_and_the_next_append_is_readable(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"key": "a#0", "error": None}) + "\n" + '{"key": "b#0", "compl')  # killed mid-write
    with ResultStore(path) as store:
        assert store.cut_lines == 1 and store.done("a#0") and not store.done("b#0")
        store.append({"key": "b#0", "completion": "z", "error": None})
    with ResultStore(path) as store:
        assert store.done("b#0") and store.get("b#0")["completion"] == "z" and store.cut_lines == 1
