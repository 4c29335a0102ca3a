"""Chat requests of scaffolds: what reaches the engine or the server, prompt-budget
skips, and failed server calls counted and retried rather than turned into proofs."""
from __future__ import annotations

import pytest

from qed_lightning.contracts import Completion, SamplingSettings
from qed_lightning.judging.client import JudgeRequest
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.models import chat_ids
from qed_lightning.scaffolds.base import Call
from qed_lightning.scaffolds.call_store import CallStore
from qed_lightning.scaffolds.chat import client_chat, engine_chat
from qed_lightning.scaffolds.driver import run_scaffold
from qed_lightning.scaffolds.rsa import RSA

from scaffold_fakes import ctx

CONVERSATION = Call.of("second question", system="be rigorous",
                       history=[{"role": "user", "content": "first"}, {"role": "assistant", "content": "answer one"}])


@pytest.mark.parametrize("api,key", [("chat", "messages"), ("responses", "input")])
def test_server_request_carries_the_conversation_and_seed(api, key):
    client = OpenAICompatibleClient("http://127.0.0.1:9/v1", "m", api=api)
    try:
        _, body = client._request(JudgeRequest("", messages=CONVERSATION.messages, seed=1234))
        assert body[key] == [dict(m) for m in CONVERSATION.messages]
        assert body["seed"] == 1234
        _, plain = client._request(JudgeRequest("just a prompt"))
        assert plain[key] == [{"role": "user", "content": "just a prompt"}] and "seed" not in plain
    finally:
        client.close()


class RecordingEngine:
    max_model_len = 10_000

    def __init__(self, text: str) -> None:
        self.text, self.seen = text, []

    def generate(self, prompts, sampling, sample_seeds=None):
        self.seen.append((list(map(list, prompts)), sample_seeds, sampling.n))
        return [[Completion(list(p), [1, 2, 3], [0.0] * 3, "stop", self.text, 0)] for p in prompts]


def test_engine_chat_renders_seeds_and_skips_what_does_not_fit(tiny_qwen3_tokenizer):
    tok = tiny_qwen3_tokenizer
    engine = RecordingEngine("<think>scratch work</think> the proof")
    fits = len(chat_ids(tok, CONVERSATION.messages))
    long_call = Call.of("word " * 400)
    generate = engine_chat(engine, tok, SamplingSettings(max_tokens=8, n=4), "after_think", prompt_limit=fits)
    replies = generate([(CONVERSATION, 11), (long_call, 12)])
    [(prompts, seeds, n)] = engine.seen
    assert prompts == [chat_ids(tok, CONVERSATION.messages)] and seeds == [[11]] and n == 1
    assert replies[0].answer == "the proof" and replies[0].tokens == 3 and replies[0].prompt_tokens == fits
    assert replies[0].text == "<think>scratch work</think> the proof"
    assert replies[1].skipped and replies[1].prompt_tokens > fits and not replies[1].usable


@pytest.mark.slow
def test_failed_server_calls_are_counted_not_stored_and_retried(tmp_path):
    from qed_lightning.testing.fault_server_handle import FaultServer

    path = tmp_path / "calls.jsonl"
    reply = "A proof. \\boxed{A}"
    rsa = RSA(population=4, group_size=2, rounds=1)
    contexts = [ctx("p1"), ctx("p2"), ctx("p3")]
    with FaultServer(fault_rate=0.3, faults=["http_500"], reply_template=reply, idle_timeout_s=60) as srv:
        client = OpenAICompatibleClient(srv.base_url, "m", max_attempts=1, max_concurrency=4)
        first = run_scaffold(rsa, contexts, client_chat(client, "whole"), CallStore(path, "rsa"))
        client.close()
        sent = srv.stats()["requests"]
    failed = sum(cost.failed for _, cost in first)
    stored = len(path.read_text().splitlines())
    assert failed > 0 and stored + failed == sent  # every request is a stored reply or a counted failure
    assert all(r.reply is None or r.reply.text == reply for r, _ in first)
    with FaultServer(reply_template=reply, idle_timeout_s=60) as srv:
        client = OpenAICompatibleClient(srv.base_url, "m", max_attempts=1)
        second = run_scaffold(rsa, contexts, client_chat(client, "whole"), CallStore(path, "rsa"))
        client.close()
        resent = srv.stats()["requests"]
    assert all(cost.failed == 0 for _, cost in second)
    import json

    stored_solves = sum(json.loads(line)["stage"] == "solve" for line in path.read_text().splitlines()[:stored])
    assert sum(cost.replayed for _, cost in second) >= stored_solves > 0  # finished calls come from the store
    assert resent == sum(cost.calls - cost.replayed for _, cost in second)
    assert all(cost.calls == 4 + 4 + 3 for _, cost in second)
