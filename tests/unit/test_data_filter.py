"""``qed data filter`` against a scripted server: flags, the keep rule as settings,
unparseable replies counted, resume."""
from __future__ import annotations

import json
from pathlib import Path

from qed_lightning.data_pipeline.classify import KeepRule
from qed_lightning.data_pipeline.filter_problems import filter_problems
from qed_lightning.data_pipeline.requests import CallSettings
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.testing.fault_server_handle import FaultServer

REPLY = ('Assessment first.\n```json\n{"incomplete": false, "difficulty": {score}, "gaps": false, "wrong": false, '
         '"disagreement": false, "computational": false}\n```')
CALLS = CallSettings(chunk_size=1, workers=2, progress=False)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_flags_keep_rule_unparseable_and_resume(tmp_path):
    src = tmp_path / "aops.jsonl"
    tags = ["SCORE=6", "SCORE=2", "SCORE=0", "FAULT=no_verdict", "SCORE=7"]
    src.write_text("".join(json.dumps({"problem": f"P {t}", "solution": "S", "candidates": ["c1", "c2"]}) + "\n"
                           for t in tags))
    out = tmp_path / "out"
    with FaultServer(reply_template=REPLY) as srv:
        c = OpenAICompatibleClient(srv.base_url, "clf", max_attempts=1, max_concurrency=2)
        summary = filter_problems(c, str(src), str(out), comments_column="candidates",
                                  keep=KeepRule(min_difficulty=3), calls=CALLS)
        assert srv.stats()["requests"] == 5
        assert "Comment:\nc1\n\nComment:\nc2" in srv.stats()["last_request"]["messages"][0]["content"]
        # difficulty 0 is out of range and the no-verdict reply has no JSON: both unparseable
        assert summary["unparseable"] == 2
        assert summary["dropped"] == {"too_easy": 1, "unparseable": 2} and summary["kept"] == 2
        kept = read(out / "kept.jsonl")
        assert [r["filter_flags"]["difficulty"] for r in kept] == [6, 7] and kept[0]["candidates"] == ["c1", "c2"]
        dropped = read(out / "dropped.jsonl")
        assert [r["filter_reasons"] for r in dropped] == [["too_easy"], ["unparseable"], ["unparseable"]]
        assert dropped[1]["filter_error"].startswith("difficulty 0")
        srv.reset_stats()
        summary = filter_problems(c, str(src), str(out), keep=KeepRule(on_unparseable="keep", max_difficulty=6),
                                  calls=CALLS)
        assert srv.stats()["requests"] == 0  # every reply is stored: a rerun only applies the new rule
    assert summary["dropped"] == {"too_hard": 1} and summary["kept"] == 4 and summary["unparseable"] == 2
