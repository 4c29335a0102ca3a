"""The fault-injecting OpenAI-compatible server that judge-client tests run against.

The client here is the standard library (http.client), never the project's judge code, so
these tests pin the server's own contract: reply shapes, each fault kind, the stats, its
capacity limit, and that it always stops by itself.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from qed_lightning.testing.fault_server_handle import FaultServer
from qed_lightning.testing.fault_server import CONTEXT_LENGTH_MESSAGE, NO_VERDICT_TEXT

CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
REASONING = "Weighing the proof."
DEFAULT_TEXT = "<assessment>Graded by the fault server.</assessment>\n<score>{}</score>"


@pytest.fixture(scope="module")
def server():
    """One server for every test that does not need its own config (each start is a process)."""
    with FaultServer(slow_s=0.5, reasoning_text=REASONING, max_body_bytes=100_000, idle_timeout_s=60) as srv:
        yield srv


def post(port: int, path: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """POST ``payload`` (JSON, or raw bytes) and return (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def chat(port: int, prompt: Any, **extra: Any) -> tuple[int, Any, bytes]:
    messages = [{"role": "system", "content": "Grade the proof."}, {"role": "user", "content": prompt}]
    return post(port, CHAT, {"model": "judge", "messages": messages, **extra})


def get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_chat_normal_reply_shape(server):
    status, headers, body = chat(server.port, "Prove it.", temperature=0.2, max_tokens=64)
    assert status == 200 and headers["Content-Type"] == "application/json"
    reply = json.loads(body)
    assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
    assert reply["model"] == "judge" and isinstance(reply["created"], int)
    text = DEFAULT_TEXT.format(7)
    assert reply["choices"] == [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text, "reasoning": REASONING}}]
    usage = reply["usage"]
    assert usage["completion_tokens"] == len(text) // 4 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    last = server.stats()["last_request"]
    assert (last["temperature"], last["max_tokens"]) == (0.2, 64)


def test_score_override_last_occurrence_wins_across_content_parts(server):
    parts = [{"type": "text", "text": "SCORE=3"}, {"type": "text", "text": "then SCORE=-2"}]
    _, _, body = chat(server.port, parts)
    assert json.loads(body)["choices"][0]["message"]["content"] == DEFAULT_TEXT.format(-2)


def test_responses_reply_with_reasoning(server):
    payload = {"model": "judge", "reasoning": {"effort": "low"},
               "input": [{"role": "user", "content": [{"type": "input_text", "text": "SCORE=5"}]}]}
    status, _, body = post(server.port, RESPONSES, payload)
    reply = json.loads(body)
    assert status == 200 and reply["id"].startswith("resp_")
    assert (reply["object"], reply["status"], reply["model"]) == ("response", "completed", "judge")
    reasoning, message = reply["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_") and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": REASONING}]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert (message["role"], message["status"]) == ("assistant", "completed")
    assert message["content"] == [{"type": "output_text", "text": DEFAULT_TEXT.format(5), "annotations": []}]
    assert set(reply["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert server.stats()["last_request"]["reasoning"] == {"effort": "low"}


@pytest.mark.parametrize(("kind", "status", "error_type"), [
    ("http_500", 500, "server_error"), ("http_503", 503, "server_error"),
    ("http_429", 429, "rate_limit_error"), ("http_400", 400, "invalid_request_error"),
])
def test_forced_http_error_faults(server, kind, status, error_type):
    before = server.stats()["faults"].get(kind, 0)
    got, headers, body = chat(server.port, f"FAULT={kind}")
    error = json.loads(body)["error"]
    assert got == status and (error["type"], error["code"]) == (error_type, status)
    assert headers["Retry-After"] == ("0.05" if kind == "http_429" else None)
    if kind == "http_400":
        assert error["message"] == CONTEXT_LENGTH_MESSAGE
    assert server.stats()["faults"][kind] == before + 1


def test_forced_malformed_json(server):
    status, headers, body = chat(server.port, "FAULT=malformed_json")
    assert (status, headers["Content-Type"], body) == (200, "application/json", b'{"choices": [')


def test_forced_empty_choices_on_both_endpoints(server):
    _, _, body = chat(server.port, "FAULT=empty_choices")
    assert json.loads(body)["choices"] == [] and json.loads(body)["object"] == "chat.completion"
    _, _, body = post(server.port, RESPONSES, {"model": "judge", "input": "FAULT=empty_choices"})
    assert json.loads(body)["output"] == [] and json.loads(body)["status"] == "completed"


@pytest.mark.parametrize(("kind", "text"), [("out_of_scale", DEFAULT_TEXT.format(9)), ("no_verdict", NO_VERDICT_TEXT)])
def test_forced_bad_verdict_faults(server, kind, text):
    status, _, body = chat(server.port, f"SCORE=3 FAULT={kind}")
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == text


def test_forced_slow_waits_slow_s_then_replies(server):
    start = time.monotonic()
    status, _, body = chat(server.port, "FAULT=slow")
    assert time.monotonic() - start >= 0.5
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == DEFAULT_TEXT.format(7)


def test_forced_drop_closes_without_a_response(server):
    with pytest.raises(ConnectionError):  # http.client.RemoteDisconnected is a ConnectionError
        chat(server.port, "FAULT=drop")
    assert get(server.port, "/health") == (200, {"status": "ok"})  # and the server lives on


def test_fault_rate_zero_never_faults(server):
    assert [chat(server.port, "fine")[0] for _ in range(10)] == [200] * 10


def test_fault_rate_one_always_faults_and_stop_exits_cleanly():
    with FaultServer(fault_rate=1.0, faults=["http_500"]) as srv:
        assert [chat(srv.port, "fine")[0] for _ in range(5)] == [500] * 5
        assert srv.stats()["faults"] == {"http_500": 5}
    assert srv.process.returncode == 0
    srv.stop()  # idempotent
    assert srv.process.returncode == 0


def test_auth_header_is_recorded_only_as_a_digest(server):
    post(server.port, CHAT, {"model": "judge", "messages": []}, headers={"Authorization": "Bearer sk-test"})
    stats = server.stats()
    assert hashlib.sha256(b"Bearer sk-test").hexdigest() in stats["auth_sha256"]
    assert "sk-test" not in json.dumps(stats["auth_sha256"])


def test_reset_stats_zeroes_counters(server):
    chat(server.port, "FAULT=http_503")
    assert server.stats()["requests"] > 0
    server.reset_stats()
    stats = server.stats()
    assert {key: stats[key] for key in ("requests", "in_flight", "peak_in_flight", "faults", "paths")} == {
        "requests": 0, "in_flight": 0, "peak_in_flight": 0, "faults": {}, "paths": {}}


def test_health_unknown_path_bad_json_and_oversized_body(server):
    assert get(server.port, "/health") == (200, {"status": "ok"})
    status, body = get(server.port, "/nope")
    assert status == 404 and body["error"]["code"] == 404
    status, _, body = post(server.port, CHAT, b"not json")
    assert status == 400 and json.loads(body)["error"]["code"] == 400
    status, _, body = post(server.port, CHAT, b"x" * 200_000)
    assert status == 413 and json.loads(body)["error"]["code"] == 413


@pytest.mark.parametrize(("max_concurrency", "min_seconds"), [(0, 0.3), (2, 4 * 0.3)])
def test_peak_in_flight_and_capacity(max_concurrency, min_seconds):
    """8 clients at once: all 8 are in flight, but a capacity of 2 serialises them 4 rounds deep."""
    with FaultServer(service_time_s=0.3, max_concurrency=max_concurrency) as srv:
        barrier = threading.Barrier(8)

        def one_request(_: int) -> int:
            barrier.wait()  # release all 8 together so they genuinely overlap
            return chat(srv.port, "fine")[0]

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one_request, range(8)))
        elapsed = time.monotonic() - start
        stats = srv.stats()
    assert statuses == [200] * 8 and elapsed >= min_seconds
    assert (stats["requests"], stats["peak_in_flight"], stats["in_flight"]) == (8, 8, 0)


def test_unknown_config_key_is_rejected_in_parent_and_child():
    with pytest.raises(ValueError, match="bogus_key"):
        FaultServer(bogus_key=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-m", "qed_lightning.testing.fault_server", "--config", '{"bogus_key": 1}'],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "bogus_key" in result.stderr


def test_stops_by_itself_when_idle():
    srv = FaultServer(idle_timeout_s=1).start()
    try:
        assert srv.process.wait(timeout=15) == 0
    finally:
        srv.stop()


def test_stops_by_itself_after_max_requests():
    srv = FaultServer(max_requests=2).start()
    try:
        assert [chat(srv.port, "fine")[0] for _ in range(2)] == [200, 200]
        assert srv.process.wait(timeout=15) == 0
    finally:
        srv.stop()
