"""LLMJudge and RuleJudge orchestration: calls, cache, failure accounting, rewards.

The client here is a scripted stand-in: these tests are about what the judge does
with replies (the HTTP client is tested against real servers in integration)."""
import threading

import pytest
import torch

from qed_lightning.contracts import GradingItem, Judge, Problem, Verdict
from qed_lightning.judging import JudgeReply, JudgeUnavailableError, LLMJudge, RuleJudge, rewards_from_verdicts

PROBLEM = Problem("p", "Prove that 2 is even.", rubric="7: says 2 = 2*1")


class ScriptedClient:
    """Replies by a function of the prompt; records every prompt it was sent."""

    def __init__(self, reply=lambda prompt: JudgeReply("<score>7</score>")):
        self.reply, self.prompts, self.lock = reply, [], threading.Lock()

    def complete(self, requests):
        with self.lock:
            self.prompts += [r.prompt for r in requests]
        return [self.reply(r.prompt) for r in requests]

    def fingerprint(self):
        return {"model": "scripted"}


def item(proof, problem=PROBLEM):
    return GradingItem(problem, proof)


def test_truncated_and_empty_answers_score_zero_without_a_call():
    client = ScriptedClient()
    judge = LLMJudge(client)
    assert isinstance(judge, Judge)
    verdicts = judge.grade([item("<think>no end"), item("<think>x</think>  "), item("<think>x</think> 2 = 2*1.")])
    assert [(v.score, v.origin) for v in verdicts] == [(0, "no_answer"), (0, "no_answer"), (7, "judge")]
    assert len(client.prompts) == 1 and "2 = 2*1." in client.prompts[0]
    assert "<think>" not in client.prompts[0]
    m = judge.metrics()
    assert m["judge/no_answer_rate"] == pytest.approx(2 / 3) and m["judge/score_hist/0"] == 2.0


def test_whole_mode_and_self_evaluation_are_applied_before_the_prompt():
    client = ScriptedClient()
    LLMJudge(client, answer_mode="whole").grade([item("Since 2 = 2*1.\n## Self Evaluation\n<score>7</score>")])
    proof_part = client.prompts[0].split("## Student's proof")[1]
    assert "Since 2 = 2*1." in proof_part and "Self Evaluation" not in proof_part


def test_grader_failures_are_counted_verdicts_not_zeros():
    replies = {"a": JudgeReply(error="timeout: no reply within 1 s (gave up after 4 attempts)", attempts=4),
               "b": JudgeReply("I am not sure."), "c": JudgeReply("<score>9</score>"), "d": JudgeReply("<score>3</score>")}
    client = ScriptedClient(lambda p: next(r for k, r in replies.items() if f"proof {k}." in p))
    judge = LLMJudge(client, answer_mode="whole")
    verdicts = judge.grade([item(f"proof {k}.") for k in "abcd"])
    assert [v.score for v in verdicts] == [None, None, None, 3]
    assert [v.error_kind for v in verdicts] == ["timeout", "no_verdict", "out_of_scale", None]
    m = judge.metrics()
    assert m["judge/failure_rate"] == 0.75 and m["judge/no_verdict_rate"] == 0.25
    assert m["judge/retries"] == 3.0 and m["judge/errors/timeout"] == 1.0


def test_rewards_zero_or_mask_failed_verdicts():
    verdicts = [Verdict(7), Verdict(None, error="timeout: x"), Verdict(0, origin="no_answer"), Verdict(3)]
    rewards, keep = rewards_from_verdicts(verdicts, "zero")
    torch.testing.assert_close(rewards, torch.tensor([1.0, 0.0, 0.0, 3 / 7]))
    assert keep.tolist() == [True, True, True, True]
    _, keep = rewards_from_verdicts(verdicts, "mask")
    assert keep.tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="on_failure"):
        rewards_from_verdicts(verdicts, "drop")


def test_judge_down_stops_the_run_after_consecutive_failed_batches():
    down = ScriptedClient(lambda p: JudgeReply(error="connection: ConnectError: refused", attempts=4))
    judge = LLMJudge(down, answer_mode="whole", max_failed_batches=2)
    judge.grade([item("x")])
    judge.grade([item("<think>only truncated</think>")] * 0 + [item("")])  # nothing asked: not counted
    with pytest.raises(JudgeUnavailableError, match="2 consecutive batches.*connection"):
        judge.grade([item("y"), item("z")])


def test_one_success_resets_the_down_counter_and_no_verdict_is_not_down():
    flaky = iter([JudgeReply(error="http_503: HTTP 503"), JudgeReply("<score>1</score>"),
                  JudgeReply(error="http_503: HTTP 503"), JudgeReply("no tag")])
    judge = LLMJudge(ScriptedClient(lambda p: next(flaky)), answer_mode="whole", max_failed_batches=2)
    for proof in "abcd":
        judge.grade([item(proof)])  # never two infrastructure failures in a row


def test_cache_pays_once_and_keeps_only_successes(tmp_path):
    calls = ScriptedClient(lambda p: JudgeReply("<score>5</score>") if "good" in p else JudgeReply(error="timeout: t"))
    judge = LLMJudge(calls, answer_mode="whole", cache_dir=tmp_path)
    first = judge.grade([item("good proof"), item("slow proof")])
    assert [v.score for v in first] == [5, None] and len(calls.prompts) == 2
    again = LLMJudge(calls, answer_mode="whole", cache_dir=tmp_path).grade([item("good proof"), item("slow proof")])
    assert [(v.score, v.origin) for v in again] == [(5, "cache"), (None, "judge")]
    assert len(calls.prompts) == 3  # only the failed one was sent again
    assert judge.cache_reference() == {"path": str(tmp_path / "judge_cache.sqlite"), "entries": 1}


def test_cache_key_covers_grader_settings_and_problem(tmp_path):
    client = ScriptedClient()
    LLMJudge(client, answer_mode="whole", cache_dir=tmp_path).grade([item("p")])
    other_problem = Problem("p", "Prove that 4 is even.", rubric=PROBLEM.rubric)
    LLMJudge(client, answer_mode="whole", cache_dir=tmp_path).grade([item("p", other_problem)])
    LLMJudge(client, answer_mode="whole", cache_dir=tmp_path, template="proofbench").grade([item("p")])
    assert len(client.prompts) == 3


def test_problem_missing_the_rubric_is_an_error_before_any_call():
    client = ScriptedClient()
    with pytest.raises(ValueError, match="problem 'q' has no rubric"):
        LLMJudge(client).grade([item("<think></think>ok"), item("<think></think>ok", Problem("q", "Prove."))])
    assert client.prompts == []


def test_constrained_verdict_sends_the_format_regex():
    seen = []

    class Recording(ScriptedClient):
        def complete(self, requests):
            seen.extend(r.constrained_regex for r in requests)
            return super().complete(requests)

    LLMJudge(Recording(), template="imo_proofbench", constrained_verdict=True, answer_mode="whole").grade(
        [item("x", Problem("p", "s", rubric="g", reference_solution="r"))]
    )
    assert seen == [r"[^<>]{0,1000}<points>(0|1|6|7) out of 7</points>"]


def test_the_same_proofs_make_the_same_prompts_in_every_call():
    # what a seeded grader needs to repeat its verdicts from run to run (a random proof
    # fence made every prompt new, and the demo's rewards changed between runs)
    first, second = ScriptedClient(), ScriptedClient()
    items = [item("Since 2 = 2*1."), item("2 is even."), item("Since 2 = 2*1.")]
    LLMJudge(first, answer_mode="whole").grade(items)
    LLMJudge(second, answer_mode="whole").grade(items)
    assert first.prompts == second.prompts and len(first.prompts) == 3
    assert first.prompts[0] == first.prompts[2] != first.prompts[1]


def bad_rule(problem, answer):
    raise RuntimeError("checker crashed")


def off_scale_rule(problem, answer):
    return 9


def test_rule_judge_scores_and_counts_rule_errors():
    judge = RuleJudge("qed_lightning.judging.rules:boxed_answer_matches", answer_mode="whole")
    p = Problem("a", "1+1?", metadata={"answer": "2"})
    assert [v.score for v in judge.grade([item("so \\boxed{ 2 }", p), item("\\boxed{3}", p), item("2", p)])] == [7, 0, 0]
    half = Problem("b", "1/2?", metadata={"answer": "\\frac{1}{2}"})  # equivalent forms match
    assert [v.score for v in judge.grade([item("\\boxed{0.5}", half), item("\\boxed{1/3}", half)])] == [7, 0]
    crashed = RuleJudge(f"{__name__}:bad_rule", answer_mode="whole").grade([item("x")])[0]
    assert crashed.score is None and crashed.error == "rule_error: RuntimeError: checker crashed"
    off = RuleJudge(f"{__name__}.off_scale_rule", answer_mode="whole").grade([item("x")])[0]
    assert off.error_kind == "out_of_scale"
    with pytest.raises(ValueError, match="cannot import judge rule"):
        RuleJudge("qed_lightning.judging.rules:nope")


def test_cache_key_covers_where_the_verdict_is_read(tmp_path):
    from pathlib import Path

    import qed_lightning

    text = (Path(qed_lightning.__file__).parent / "prompts" / "judge_rl_strict.md").read_text()
    assert "verdict_at: last" in text
    first = tmp_path / "first.md"
    first.write_text(text.replace("verdict_at: last", "verdict_at: first"))
    client = ScriptedClient()
    LLMJudge(client, answer_mode="whole", cache_dir=tmp_path).grade([item("p")])
    LLMJudge(client, answer_mode="whole", cache_dir=tmp_path, template=str(first)).grade([item("p")])
    assert len(client.prompts) == 2  # same text, read at the other end: not a cache hit
