"""The HTTP judge against the fault-injecting server, in its own process.

A real vLLM server will not produce 500s, 429s or dropped connections on demand, so
these failure paths run against the project's fault server; the happy path runs
against a real ``vllm serve`` in test_judge_vllm_serve.py."""
import hashlib
import json

import pytest
import yaml

from qed_lightning.cli import main
from qed_lightning.contracts import GradingItem, Problem
from qed_lightning.judging import JudgeUnavailableError, LLMJudge
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.testing.fault_server_handle import FaultServer

PROBLEM = Problem("p", "Prove that 2 is even.", rubric="7: 2 = 2*1")
FAST = dict(timeout_s=5, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture(scope="module")
def server():
    with FaultServer(idle_timeout_s=300) as srv:
        yield srv


@pytest.fixture
def fresh(server):
    server.reset_stats()
    return server


def judge_for(srv, api="chat", cache_dir=None, **client_kw):
    client = OpenAICompatibleClient(srv.base_url, "grader", api=api, **{**FAST, **client_kw})
    return LLMJudge(client, answer_mode="whole", cache_dir=cache_dir)


def items(*proofs):
    return [GradingItem(PROBLEM, p) for p in proofs]


@pytest.mark.parametrize(
    "fault,kind,attempts",
    [
        ("http_500", "http_500", 3), ("http_503", "http_503", 3), ("http_429", "rate_limited", 3),
        ("malformed_json", "malformed_response", 3), ("empty_choices", "malformed_response", 3),
        ("drop", "connection", 3), ("http_400", "too_long", 1),
        ("out_of_scale", "out_of_scale", 1), ("no_verdict", "no_verdict", 1),
    ],
)
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_each_fault_ends_as_a_counted_error_of_its_kind(fresh, api, fault, kind, attempts):
    judge = judge_for(fresh, api=api)
    (verdict,) = judge.grade(items(f"2 = 2*1. FAULT={fault}"))
    assert verdict.score is None and verdict.error_kind == kind and verdict.attempts == attempts
    assert fresh.stats()["requests"] == attempts
    assert judge.metrics()[f"judge/errors/{kind}"] == 1.0


@pytest.mark.parametrize("max_attempts", [1, 3])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_server_that_always_fails_sees_exactly_max_attempts_requests(max_attempts, api):
    with FaultServer(fault_rate=1.0, faults=["http_503"], idle_timeout_s=60) as srv:
        judge = judge_for(srv, api=api, max_attempts=max_attempts)
        (verdict,) = judge.grade(items("x"))
        assert srv.stats()["requests"] == max_attempts  # the first request counts as an attempt
    assert verdict.attempts == max_attempts and verdict.error == (
        f"http_503: HTTP 503: Service unavailable (injected fault). (gave up after {max_attempts} attempts)")


def test_max_attempts_below_one_is_refused():
    with pytest.raises(ValueError, match=r"max_attempts >= 1 \(requests in all, the first included\)"):
        OpenAICompatibleClient("http://127.0.0.1:9/v1", "m", max_attempts=0)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_temperature_none_is_not_sent(fresh, api):
    judge_for(fresh, api=api, temperature=None).grade(items("SCORE=5"))
    sent = fresh.stats()["last_request"]
    assert "temperature" not in sent and sent["model"] == "grader"  # the provider's default applies
    judge_for(fresh, api=api, temperature=0.6).grade(items("SCORE=5"))
    assert fresh.stats()["last_request"]["temperature"] == 0.6


def test_slow_reply_times_out_and_is_retried():
    with FaultServer(slow_s=5.0, idle_timeout_s=60) as srv:
        judge = judge_for(srv, timeout_s=0.3, max_attempts=2)
        (verdict,) = judge.grade(items("FAULT=slow"))
    assert verdict.error_kind == "timeout" and verdict.attempts == 2 and verdict.latency_s >= 0.6


def test_retry_after_is_honoured():
    with FaultServer(fault_rate=1.0, faults=["http_429"], retry_after_s=0.4, idle_timeout_s=60) as srv:
        judge = judge_for(srv, max_attempts=2, max_backoff_s=1.0)
        (verdict,) = judge.grade(items("x"))
    assert verdict.error_kind == "rate_limited" and verdict.attempts == 2 and verdict.latency_s >= 0.4


def test_thirty_percent_faults_every_item_ends_scored_or_counted():
    with FaultServer(fault_rate=0.3, faults=["http_500", "http_429", "malformed_json", "empty_choices", "drop",
                                             "no_verdict"], retry_after_s=0.01, seed=3, idle_timeout_s=60) as srv:
        judge = judge_for(srv, max_attempts=4, max_concurrency=8)
        verdicts = judge.grade(items(*[f"proof {i} SCORE={i % 8}" for i in range(60)]))
        stats = srv.stats()
    assert len(verdicts) == 60
    ok = [v for v in verdicts if v.ok]
    assert all(v.score == int(v.raw.split("<score>")[1][0]) for v in ok)
    assert all(v.score == i % 8 for i, v in enumerate(verdicts) if v.ok)
    assert all(v.error_kind in {"no_verdict", "http_500", "rate_limited", "malformed_response", "connection"}
               for v in verdicts if not v.ok)
    # retries recover infrastructure faults; a no_verdict reply is the grader's answer and is not resent
    assert len(ok) >= 45
    assert sum(v.attempts for v in verdicts) == stats["requests"]
    m = judge.metrics()
    assert m["judge/failure_rate"] == pytest.approx((60 - len(ok)) / 60)


def test_concurrency_is_bounded_and_used():
    with FaultServer(service_time_s=0.2, idle_timeout_s=60) as srv:
        judge_for(srv, max_concurrency=4).grade(items(*[f"p{i}" for i in range(16)]))
        assert srv.stats()["peak_in_flight"] == 4


def test_responses_api_reads_the_answer_not_the_reasoning(fresh):
    with FaultServer(reasoning_text="Tempting to give <score>0</score> here.", idle_timeout_s=60) as srv:
        judge = judge_for(srv, api="responses", reasoning_effort="medium", max_tokens=777)
        (verdict,) = judge.grade(items("SCORE=6 2 = 2*1"))
        sent = srv.stats()["last_request"]
    assert verdict.score == 6
    assert sent["reasoning"] == {"effort": "medium"} and sent["max_output_tokens"] == 777
    assert sent["temperature"] == 1.0 and "BEGIN PROOF" in sent["input"][0]["content"]


def test_chat_request_fields_and_constrained_regex(fresh):
    client = OpenAICompatibleClient(fresh.base_url, "grader", reasoning_effort="low", max_tokens=99, **FAST)
    LLMJudge(client, answer_mode="whole", constrained_verdict=True).grade(items("y"))
    sent = fresh.stats()["last_request"]
    assert sent["model"] == "grader" and sent["max_completion_tokens"] == 99 and sent["reasoning_effort"] == "low"
    assert sent["structured_outputs"] == {"regex": r"[^<>]{0,1000}<score>(0|1|2|3|4|5|6|7)</score>"}


def test_cache_hits_skip_the_server(fresh, tmp_path):
    judge_for(fresh, cache_dir=tmp_path).grade(items("a SCORE=3", "b SCORE=4"))
    again = judge_for(fresh, cache_dir=tmp_path).grade(items("a SCORE=3", "b SCORE=4", "c SCORE=5"))
    assert [(v.score, v.origin) for v in again] == [(3, "cache"), (4, "cache"), (5, "judge")]
    assert fresh.stats()["requests"] == 3


def test_server_down_stops_the_run():
    with FaultServer(fault_rate=1.0, faults=["http_503"], idle_timeout_s=60) as srv:
        client = OpenAICompatibleClient(srv.base_url, "grader", **{**FAST, "max_attempts": 1})
        judge = LLMJudge(client, answer_mode="whole", max_failed_batches=2)
        judge.grade(items("a"))
        with pytest.raises(JudgeUnavailableError, match="http_503"):
            judge.grade(items("b", "c"))


def test_qed_judge_never_leaks_the_key_and_resumes(fresh, tmp_path, monkeypatch, capsys):
    secret = "sk-qed-test-3f9a1c0d"
    monkeypatch.setenv("QED_TEST_JUDGE_KEY", secret)
    config = tmp_path / "judge.yaml"
    config.write_text(yaml.safe_dump({"judge": {"class_path": "qed_lightning.judging.LLMJudge", "init_args": {
        "answer_mode": "whole", "cache_dir": str(tmp_path / "cache"), "client": {
            "class_path": "qed_lightning.judging.openai_client.OpenAICompatibleClient",
            "init_args": {"base_url": fresh.base_url, "model": "grader", "api_key_env": "QED_TEST_JUDGE_KEY", **FAST}}}}}))
    rows = [{"id": f"r{i}", "problem": "Prove it.", "rubric": "7: done", "proof": f"proof SCORE={i}"} for i in range(4)]
    rows[2]["proof"] = "FAULT=http_500"
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["judge", "--config", str(config), "--input", str(tmp_path / "in.jsonl"), "--output", str(out)]
    main(args)
    with pytest.raises(SystemExit):
        main(args + ["--print_config"])
    printed = capsys.readouterr()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["id"], x["score"]) for x in lines] == [("r0", 0), ("r1", 1), ("r2", None), ("r3", 3)]
    assert "QED_TEST_JUDGE_KEY" in printed.out  # the variable's name is the config
    for text in (printed.out, printed.err, out.read_text(), config.read_text(), *(p.read_bytes().decode("latin-1")
                 for p in (tmp_path / "cache").iterdir())):
        assert secret not in text
    assert fresh.stats()["auth_sha256"] == [hashlib.sha256(f"Bearer {secret}".encode()).hexdigest()]

    # a second run regrades only the failed row (newest line counts)
    fresh.reset_stats()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({**r, "proof": r["proof"].replace("FAULT=http_500", "SCORE=2")})
                                               + "\n" for r in rows))
    main(args)
    assert fresh.stats()["requests"] == 1
    assert json.loads(out.read_text().splitlines()[-1]) | {"latency_s": 0} == {
        "id": "r2", "score": 2, "error": None, "origin": "judge", "latency_s": 0, "attempts": 1,
        "raw": "<assessment>Graded by the fault server.</assessment>\n<score>2</score>"}


def test_missing_key_variable_is_named_not_shown(monkeypatch):
    monkeypatch.delenv("QED_ABSENT_KEY", raising=False)
    with pytest.raises(ValueError, match="environment variable QED_ABSENT_KEY is not set"):
        OpenAICompatibleClient("http://127.0.0.1:9/v1", "m", api_key_env="QED_ABSENT_KEY")
    monkeypatch.setenv("QED_ABSENT_KEY", "sk-visible?")
    assert "sk-visible" not in repr(OpenAICompatibleClient("http://127.0.0.1:9/v1", "m", api_key_env="QED_ABSENT_KEY"))


def test_bad_input_row_is_named(fresh, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "problem": "P", "rubric": "r", "proof": "x"}\n{"id": "b", "problem": "P"}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: proof column 'proof' is missing"):
        from qed_lightning.judging.grade_file import grade_file

        grade_file(judge_for(fresh), str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists() and fresh.stats()["requests"] == 0


def test_progress_bar_mode_keeps_the_order(fresh, capsys):
    client = OpenAICompatibleClient(fresh.base_url, "grader", progress=True, max_concurrency=4, **FAST)
    verdicts = LLMJudge(client, answer_mode="whole").grade(items(*[f"p SCORE={i % 8}" for i in range(12)]))
    assert [v.score for v in verdicts] == [i % 8 for i in range(12)]
    assert "12/12" in capsys.readouterr().err
