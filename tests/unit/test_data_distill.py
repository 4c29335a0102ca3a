"""``qed data distill`` against a scripted OpenAI-compatible server (faults included)
and a scripted teacher: failures stored as failures, resume after a kill, the split,
truncation counts, grading and the keep-one rule, and the SFT loader on the output."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qed_lightning.data.records import SFTColumns, rows_to_sft_examples
from qed_lightning.data.sources import iter_rows
from qed_lightning.data_pipeline.distill import distill
from qed_lightning.data_pipeline.requests import CallSettings
from qed_lightning.judging import LLMJudge
from qed_lightning.judging.client import JudgeReply
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.testing.fault_server_handle import FaultServer

REPLY = "<think>Plan SCORE={score}.</think>\n\nProof for SCORE={score}."
CALLS = CallSettings(chunk_size=1, workers=4, progress=False)


def problems(tmp_path: Path, n: int, extra: str = "") -> str:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Problem {i}. SCORE={i % 8}{extra}",
                                        "source": "aops"}) + "\n" for i in range(n)))
    return str(path)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def client(srv: FaultServer, **kw) -> OpenAICompatibleClient:
    return OpenAICompatibleClient(srv.base_url, "teacher", max_attempts=2, backoff_s=0.01, max_concurrency=4, **kw)


def test_failed_requests_are_stored_as_failures_then_asked_again(tmp_path):
    src, out = problems(tmp_path, 3), tmp_path / "out"
    with FaultServer(fault_rate=1.0, faults=["http_503"], reply_template=REPLY) as down:
        summary = distill(client(down), src, str(out), id_column="id", samples_per_problem=2, calls=CALLS)
        assert down.stats()["requests"] == 12  # 6 requests x 2 attempts
    rows = read(out / "requests.jsonl")
    assert len(rows) == 6 and all(r["error"].startswith("http_503") and "completion" not in r for r in rows)
    assert summary["failed_calls"] == 6 and summary["dropped"] == {"failed_request": 6}
    assert summary["kept_all"] == 0 and read(out / "all.jsonl") == []
    with FaultServer(reply_template=REPLY) as up:
        summary = distill(client(up), src, str(out), id_column="id", samples_per_problem=2, calls=CALLS)
        assert up.stats()["requests"] == 6
    assert summary["requests_sent"] == 6 and summary["failed_calls"] == 0 and summary["kept_all"] == 6
    default = read(out / "default.jsonl")
    assert [(r["problem_id"], r["request_idx"]) for r in default] == [("p0", 0), ("p1", 0), ("p2", 0)]
    assert default[1]["reasoning_content"] == "Plan SCORE=1." and default[1]["proof"] == "Proof for SCORE=1."
    assert default[1]["source"] == "aops" and default[1]["usage"]["completion_tokens"] > 0
    # the SFT loader reads the output with its default (FineProofs-SFT) columns
    examples, report = rows_to_sft_examples(iter_rows(str(out / "default.jsonl")), SFTColumns())
    assert report.kept == 3 and examples[2].reasoning == "Plan SCORE=2."
    assert examples[2].response == "Proof for SCORE=2."


def test_server_reasoning_field_and_chat_template_kwargs_are_used(tmp_path):
    with FaultServer(reply_template="Proof.", reasoning_text="Thinking apart.") as srv:
        distill(client(srv, extra_body={"chat_template_kwargs": {"enable_thinking": True}}, temperature=1.0),
                problems(tmp_path, 1), str(tmp_path / "o"), calls=CALLS, system_prompt=None)
        sent = srv.stats()["last_request"]
    assert sent["chat_template_kwargs"] == {"enable_thinking": True} and sent["temperature"] == 1.0
    assert sent["messages"] == [{"role": "user", "content": "Problem 0. SCORE=0"}]  # the raw problem, alone
    [row] = read(tmp_path / "o/default.jsonl")
    assert (row["reasoning_content"], row["proof"], row["problem_id"]) == ("Thinking apart.", "Proof.", "row1")


def test_a_killed_run_resumes_losing_and_repeating_nothing(tmp_path):
    src, out = problems(tmp_path, 12), tmp_path / "out"
    # 2 requests in flight, 0.5 s each: 24 requests take 6 s, and the kill lands after the first 6
    with FaultServer(reply_template=REPLY, service_time_s=0.5) as srv:
        cmd = [sys.executable, "-m", "qed_lightning.cli", "data", "distill", "--input", src, "--output_dir", str(out),
               "--id_column", "id", "--samples_per_problem", "2", "--calls.workers", "2", "--calls.progress", "false",
               "--client", "qed_lightning.judging.openai_client.OpenAICompatibleClient",
               "--client.base_url", srv.base_url, "--client.model", "t", "--client.max_concurrency", "2"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = out / "requests.jsonl"
        deadline = time.monotonic() + 300  # the child's imports can take long on a loaded machine
        while time.monotonic() < deadline and proc.poll() is None and (not store.exists() or len(read(store)) < 6):
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = {r["key"] for r in read(store)}
        assert 6 <= len(first) < 24, f"the kill must land mid-run ({len(first)} of 24 stored)"
        srv.reset_stats()
        summary = distill(client(srv), src, str(out), id_column="id", samples_per_problem=2, calls=CALLS)
        assert srv.stats()["requests"] == 24 - len(first)  # nothing finished is asked again
    keys = [r["key"] for r in read(store)]
    assert sorted(keys) == sorted({f"p{i}#{k}" for i in range(12) for k in range(2)})  # each exactly once
    assert summary["requests_already_done"] == len(first) and summary["kept_all"] == 24


class ScriptedTeacher:
    """Replies from a list per problem, in request order (one worker, chunks of one)."""

    def __init__(self, script: dict[str, list[JudgeReply]]) -> None:
        self.script, self.calls = script, []

    def fingerprint(self):
        return {"model": "scripted"}

    def complete(self, requests):
        out = []
        for r in requests:
            key = r.prompt.split(".")[0]
            self.calls.append(key)
            out.append(self.script[key][sum(c == key for c in self.calls) - 1])
        return out


def reply(text: str, finish: str = "stop", reasoning: str = "") -> JudgeReply:
    return JudgeReply(text=text, reasoning=reasoning, finish_reason=finish, completion_tokens=len(text),
                      prompt_tokens=3)


def test_truncation_grading_and_keep_one_rule(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"problem": f"Problem {i}. Prove it.", "rubric": "(7 pts) all"}) + "\n"
                           for i in range(3)))
    teacher = ScriptedTeacher({
        # graded 3, 7, 7: the first 7 (request 1) is kept
        "Problem 0": [reply("<think>a</think>P SCORE=3"), reply("<think>b</think>P SCORE=7"),
                      reply("<think>c</think>P SCORE=7")],
        # truncated by length, never closed, and an empty proof: no sample left
        "Problem 1": [reply("<think>a</think>P SCORE=7", "length"), reply("thinking on SCORE=7"),
                      reply("<think>a</think>  ")],
        # one usable sample of grade 0
        "Problem 2": [reply("x", "length"), reply("<think>a</think>P SCORE=0"), reply("y", "length")],
    })
    with FaultServer() as grader:  # the verdict is the SCORE= written in the graded proof
        judge = LLMJudge(OpenAICompatibleClient(grader.base_url, "judge", max_concurrency=4), answer_mode="whole")
        summary = distill(teacher, str(src), str(tmp_path / "out"), rubric_column="rubric", samples_per_problem=3,
                          judge=judge, grade_column="gemini-3-pro-grade",
                          calls=CallSettings(chunk_size=1, workers=1, progress=False))
        assert grader.stats()["requests"] == 4  # only the usable proofs are graded
    assert summary["truncated"] == 4 and summary["dropped"] == {"truncated": 4, "empty_proof": 1}
    assert summary["kept_all"] == 4 and summary["kept_default"] == 2 and summary["problems_without_sample"] == 1
    assert summary["graded"] == 4
    default = read(tmp_path / "out/default.jsonl")
    assert [(r["problem_id"], r["request_idx"], r["gemini-3-pro-grade"]) for r in default] == [
        ("row1", 1, 7), ("row3", 1, 0)]
    all_rows = read(tmp_path / "out/all.jsonl")
    assert [r["gemini-3-pro-grade"] for r in all_rows] == [3, 7, 7, 0]


def test_truncated_rows_are_kept_when_asked(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"problem": "Problem 0. x"}) + "\n")
    teacher = ScriptedTeacher({"Problem 0": [reply("<think>a</think>P", "length"), reply("<think>b</think>Q")]})
    summary = distill(teacher, str(src), str(tmp_path / "o"), samples_per_problem=2, drop_truncated=False,
                      keep="all", calls=CallSettings(chunk_size=2, workers=1, progress=False))
    rows = read(tmp_path / "o/default.jsonl")
    assert [(r["proof"], r["truncated"]) for r in rows] == [("P", True), ("Q", False)]
    assert summary["truncated"] == 1 and summary["dropped"] == {}
