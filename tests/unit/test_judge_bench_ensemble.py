"""Judge ensembles: combining rules, per-member failure counts, k samples, use as the RL judge."""
from __future__ import annotations

import itertools

import pytest
import torch

from qed_lightning.contracts import GradingItem, Problem, Verdict
from qed_lightning.judging import RuleJudge
from qed_lightning.judging.base import BaseJudge, JudgeUnavailableError
from qed_lightning.judging.bench import JudgeEnsemble, combine_scores

PROBLEM = Problem("p", "Prove it.", rubric="7 points")
HERE = __name__


def planned(problem, answer):
    """The score written in the proof as 'score N'; 'fail' raises (a counted rule_error)."""
    if "fail" in answer:
        raise RuntimeError("planned failure")
    return int(answer.split("score ")[1].split()[0])


def plus_one(problem, answer):
    return min(7, planned(problem, answer) + 1)


def fails_always(problem, answer):
    raise RuntimeError("down")


_COUNTER = itertools.count()


def cycling(problem, answer):
    """0, 1, 2, 0, 1, 2, ... over calls: k samples of one grader that disagree."""
    return next(_COUNTER) % 3


def rule(name: str, **kw) -> RuleJudge:
    return RuleJudge(f"{HERE}:{name}", answer_mode="whole", **kw)


def items(*proofs: str) -> list[GradingItem]:
    return [GradingItem(PROBLEM, p) for p in proofs]


@pytest.mark.parametrize("how,scores,expected", [
    ("mean", [7, 6, 6], 6), ("mean", [6, 7], 7), ("mean", [0, 1, 1, 1], 1), ("mean", [2, 3, 3], 3),
    ("median", [0, 3, 7, 7], 5), ("median", [1, 2], 2), ("median", [0, 7, 1], 1),
    ("majority", [2, 2, 5, 5, 7], 2), ("majority", [3, 3, 6], 3), ("majority", [6, 4], 4), ("majority", [7], 7),
])
def test_combining_rules(how, scores, expected):
    assert combine_scores(scores, how) == expected


def test_members_combine_per_proof_and_count_their_own_failures():
    judge = JudgeEnsemble([rule("planned"), rule("plus_one"), rule("planned")], combine="median")
    verdicts = judge.grade(items("score 3", "score 6", "fail"))
    assert [v.score for v in verdicts[:2]] == [3, 6]  # medians of (3, 4, 3) and (6, 7, 6)
    assert verdicts[2].score is None and verdicts[2].error_kind == "rule_error"
    assert "ensemble got 0 of 3 gradings, needs 1" in verdicts[2].error
    metrics = judge.metrics()
    assert metrics["judge/failure_rate"] == pytest.approx(1 / 3)
    for i in range(3):
        assert metrics[f"judge/member{i}/errors/rule_error"] == 1.0
        assert metrics[f"judge/member{i}/items"] == 3.0


def test_a_failed_member_is_left_out_and_min_ok_decides():
    members = [rule("planned"), rule("fails_always", max_failed_batches=0)]
    lenient = JudgeEnsemble(members, combine="mean", min_ok=1)
    (v,) = lenient.grade(items("score 5"))
    assert v.score == 5
    assert lenient.metrics()["judge/member1/errors/rule_error"] == 1.0
    assert lenient.metrics()["judge/member0/failure_rate"] == 0.0
    strict = JudgeEnsemble([rule("planned"), rule("fails_always", max_failed_batches=0)], min_ok=2)
    (v,) = strict.grade(items("score 5"))
    assert v.score is None and v.error_kind == "rule_error" and "got 1 of 2" in v.error


def test_k_samples_go_to_the_member_in_one_batch_and_are_all_combined():
    global _COUNTER
    _COUNTER = itertools.count()
    member = rule("cycling")
    judge = JudgeEnsemble([member], samples=3, combine="mean")
    verdicts = judge.grade(items("a", "b"))
    # one batch of 6: calls 0..5 give 0,1,2,0,1,2; item 0 gets calls 0, 2, 4 -> (0, 2, 1), item 1 (1, 0, 2)
    assert member.last_stats.items == 6
    assert [v.score for v in verdicts] == [1, 1]
    assert [len(vs) for _, vs in judge.last_member_verdicts] == [6]
    assert verdicts[0].raw == '{"scores": [0, 2, 1], "errors": [null, null, null]}'


def test_empty_answers_score_zero_without_a_call():
    judge = JudgeEnsemble([rule("planned"), rule("planned")])
    (v,) = judge.grade(items("   "))
    assert v.score == 0 and v.origin == "no_answer"


def test_a_cached_member_is_refused_for_several_samples(tmp_path):
    from qed_lightning.judging import LLMJudge

    class Client:
        def complete(self, requests):
            raise AssertionError("not called")

        def fingerprint(self):
            return {}

    cached = LLMJudge(Client(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="without a verdict cache"):
        JudgeEnsemble([cached], samples=2)
    JudgeEnsemble([cached], samples=1)  # one grading per member may use the cache


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="combine must be one of"):
        JudgeEnsemble([rule("planned")], combine="mode")
    with pytest.raises(ValueError, match="min_ok"):
        JudgeEnsemble([rule("planned")], samples=2, min_ok=3)
    with pytest.raises(ValueError, match="at least one member"):
        JudgeEnsemble([])


class TimesOut(BaseJudge):
    """A grader whose server never answers (an infrastructure failure, not a bad reply)."""

    def _grade_answers(self, problems, answers):
        return [Verdict(None, error="timeout: no reply", attempts=3) for _ in answers]


def test_an_ensemble_whose_members_are_all_down_stops_the_run():
    judge = JudgeEnsemble([TimesOut(answer_mode="whole", max_failed_batches=0)], max_failed_batches=2)
    (v,) = judge.grade(items("score 1"))
    assert v.error_kind == "timeout" and v.attempts == 3
    with pytest.raises(JudgeUnavailableError, match="2 consecutive batches"):
        judge.grade(items("score 1"))
    # a grader that answers badly is not down: the ensemble keeps going
    answers_badly = JudgeEnsemble([rule("fails_always", max_failed_batches=0)], max_failed_batches=1)
    answers_badly.grade(items("score 1"))
    answers_badly.grade(items("score 1"))


def test_built_from_yaml_as_the_rl_judge_and_rewarded_with_its_failure_policy():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--judge", type=BaseJudge)
    config = {"judge": {"class_path": "qed_lightning.judging.bench.JudgeEnsemble", "init_args": {
        "combine": "majority", "on_failure": "mask",
        "members": [{"class_path": "qed_lightning.judging.RuleJudge",
                     "init_args": {"rule": f"{HERE}:planned", "answer_mode": "whole"}}] * 3}}}
    judge = parser.instantiate(parser.parse_object(config)).judge
    assert isinstance(judge, JudgeEnsemble) and len(judge.members) == 3
    verdicts = judge.grade(items("score 7", "fail"))
    rewards, keep = judge.rewards(verdicts)
    assert torch.equal(rewards, torch.tensor([1.0, 0.0])) and keep.tolist() == [True, False]
