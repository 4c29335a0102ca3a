"""``qed data rubrics`` against a scripted server: checked schemes, one regeneration
for a broken one, failures asked again on the next run, and the FineProofs-RL column."""
from __future__ import annotations

import json
from pathlib import Path

from qed_lightning.data_pipeline.requests import CallSettings
from qed_lightning.data_pipeline.rubrics import rubrics
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.rollouts.problems import ProblemColumns, rows_to_problems
from qed_lightning.data.sources import iter_rows
from qed_lightning.testing.fault_server_handle import FaultServer

# valid exactly when the problem says SCORE=2 (3 + 2 + 2 = 7)
SCHEME = ("<think>draft</think>Here is the scheme.\n## Checkpoints (7 points total)\n- (3 pts) Key idea.\n"
          "- ({score} pts) Second step.\n- (2 pts) Finish.\n## Zero credit\n- Cases.\n## Deductions\n- -1: slip.")
CALLS = CallSettings(chunk_size=1, workers=2, progress=False)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_schemes_are_checked_regenerated_and_resumed(tmp_path):
    src = tmp_path / "p.jsonl"
    tags = ["SCORE=2", "SCORE=5", "SCORE=2 FAULT=http_500"]
    src.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Problem {t}", "solution": "Official."}) + "\n"
                           for i, t in enumerate(tags)))
    out = tmp_path / "out"
    with FaultServer(reply_template=SCHEME) as srv:
        c = OpenAICompatibleClient(srv.base_url, "grader", max_attempts=1, max_concurrency=2)
        summary = rubrics(c, str(src), str(out), id_column="id", max_attempts=2, calls=CALLS)
        # p0 once; p1 twice (its scheme fails the check); p2 once (a failed call waits for the next run)
        assert srv.stats()["requests"] == 4
        assert summary["valid"] == 1 and summary["invalid"] == 1 and summary["regenerated"] == 1
        assert summary["failed_calls"] == 1 and summary["dropped"] == {"failed_request": 1}
        rows = read(out / "rubrics.jsonl")
        assert [(r["id"], r["rubric_ok"], r["rubric_attempts"]) for r in rows] == [("p0", True, 1), ("p1", False, 2)]
        assert rows[0]["rubrics"].startswith("## Checkpoints") and "draft" not in rows[0]["rubrics"]
        assert rows[1]["rubric_issues"] == ["checkpoints total 10 points, not 7"]
        assert rows[0]["solution"] == "Official."  # input columns carried along
        srv.reset_stats()
        src.write_text(src.read_text().replace(" FAULT=http_500", ""))  # the server is healthy again
        summary = rubrics(c, str(src), str(out), id_column="id", max_attempts=2, on_invalid="drop", calls=CALLS)
        assert srv.stats()["requests"] == 1  # only the failed one
    assert summary["valid"] == 2 and summary["dropped"] == {"invalid_rubric": 1} and summary["kept"] == 2
    # the RL loader reads the output with its default (FineProofs-RL) columns
    problems, _ = rows_to_problems(iter_rows(str(out / "rubrics.jsonl")), ProblemColumns(id="id"))
    assert [p.id for p in problems] == ["p0", "p2"] and problems[0].rubric.startswith("## Checkpoints")
