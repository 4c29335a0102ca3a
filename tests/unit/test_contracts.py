import pytest

from qed_lightning.contracts import (
    Completion, GradingItem, Judge, Problem, RolloutEngine, SamplingSettings, Verdict,
)


def test_problem_validates_its_fields():
    p = Problem(id="pb-1", statement="Prove 1 < 2.", rubric="(7 pts) ...")
    assert p.reference_solution is None and dict(p.metadata) == {}
    with pytest.raises(ValueError, match="non-empty string"):
        Problem(id="", statement="x")
    with pytest.raises(ValueError, match="'pb-2': statement"):
        Problem(id="pb-2", statement="  ")


def test_verdict_keeps_failures_apart_from_zero_scores():
    assert Verdict(score=7).reward == 1.0 and Verdict(score=0).ok
    failed = Verdict(score=None, error="timeout after 3 retries")
    assert not failed.ok and failed.reward == 0.0
    with pytest.raises(ValueError, match="0..7"):
        Verdict(score=8)
    with pytest.raises(ValueError, match="must carry an error"):
        Verdict(score=None)


def test_completion_and_sampling_checks():
    c = Completion(prompt_ids=[1, 2], completion_ids=[3, 4], logprobs=[-0.1, -0.2],
                   finish_reason="length", text="ab", weight_version=3)
    assert c.truncated
    with pytest.raises(ValueError, match="2 tokens but 1 log-probs"):
        Completion(prompt_ids=[1], completion_ids=[3, 4], logprobs=[-0.1], finish_reason="stop", text="", weight_version=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0.0)


def test_protocols_are_structural():
    class EchoJudge:
        def grade(self, items):
            return [Verdict(score=len(i.proof) % 8) for i in items]

    judge = EchoJudge()
    assert isinstance(judge, Judge)
    assert [v.score for v in judge.grade([GradingItem(Problem(id="a", statement="s"), "proof")])] == [5]
    assert not isinstance(judge, RolloutEngine)
