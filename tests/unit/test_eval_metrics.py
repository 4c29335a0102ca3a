"""avg@k, pass@k and summarize_records against hand-computed values, under both rules for
failed gradings (``zero``, the released stats.py's over several runs, and ``leave_out``)."""
import dataclasses
import itertools
import math

import pytest
import torch

from qed_lightning.evaluation.metrics import AvgAtK, PassAtK, pass_at_k, summarize_records
from qed_lightning.evaluation.records import EvalRecord

NAN = float("nan")
# 2 problems x 3 runs; row = problem, column = run (sample index)
SCORES = [[7, 0, 7],
          [1, 6, 7]]


def _flat(scores):
    s = torch.tensor(scores, dtype=torch.float)  # [P, k]
    problem = torch.arange(s.shape[0]).repeat_interleave(s.shape[1])  # [P*k]
    run = torch.arange(s.shape[1]).repeat(s.shape[0])  # [P*k]
    return s.flatten(), problem, run


def test_avg_at_k_by_hand():
    scores, _, run = _flat(SCORES)
    metric = AvgAtK(k=3)
    metric.update(scores, run)
    mean, std, per_run = metric.compute()
    # run means (of 7): run0 (7+1)/2 = 4, run1 (0+6)/2 = 3, run2 (7+7)/2 = 7
    assert per_run.tolist() == pytest.approx([400 / 7, 300 / 7, 100.0])
    # mean of run means 14/3 -> 14/3/7 = 66.67 %
    assert mean.item() == pytest.approx(200 / 3)
    # ddof=1: deviations -2/3, -5/3, 7/3; squares sum 78/9; /2 = 13/3; sqrt(13/3)/7 in %
    assert std.item() == pytest.approx(100 * math.sqrt(13 / 3) / 7, rel=1e-5)


def test_avg_at_k_excludes_and_counts_failed_gradings():
    scores, _, run = _flat([[7, 0, 7], [1, NAN, 7]])
    metric = AvgAtK(k=3)
    metric.update(scores, run)
    mean, _, per_run = metric.compute()
    # run1 keeps only problem 0's 0: 0 %, not (0 + 0)/2 nor NaN
    assert per_run.tolist() == pytest.approx([400 / 7, 0.0, 100.0])
    assert mean.item() == pytest.approx((4 + 0 + 7) / 3 / 7 * 100)
    assert metric.failed.item() == 1


def test_run_without_graded_items_is_nan_not_zero():
    metric = AvgAtK(k=3)
    metric.update(torch.tensor([7.0, 0.0, NAN]), torch.tensor([0, 1, 2]))
    mean, std, per_run = metric.compute()
    assert math.isnan(per_run[2].item())
    assert mean.item() == pytest.approx(50.0)  # the NaN run is left out: (100 + 0) / 2
    assert std.item() == pytest.approx(math.sqrt(5000))  # ddof=1 over [100, 0]
    empty = AvgAtK(k=2)
    empty.update(torch.tensor([NAN]), torch.tensor([0]))
    assert all(math.isnan(v.item()) for v in empty.compute()[:2])


def test_avg_at_k_rejects_out_of_range_runs():
    with pytest.raises(ValueError, match="0..2"):
        AvgAtK(k=3).update(torch.tensor([7.0]), torch.tensor([3]))


def test_pass_at_k_by_hand():
    scores, problem, _ = _flat(SCORES)
    # problem 0: n=3, c=2; problem 1: n=3, c=1
    # pass@1 = c/n: (2/3 + 1/3) / 2 = 50 %
    # pass@2: p0 1 - C(1,2)/C(3,2) = 1; p1 1 - C(2,2)/C(3,2) = 2/3; mean 5/6
    for k, expected in ((1, 50.0), (2, 500 / 6), (3, 100.0)):
        metric = PassAtK(k, num_problems=2)
        metric.update(scores, problem)
        assert metric.compute().item() == pytest.approx(expected)


@pytest.mark.parametrize("n", range(1, 8))
def test_unbiased_estimator_equals_subset_enumeration(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_skips_and_counts_problems_with_too_few_graded_samples():
    metric = PassAtK(2, num_problems=3)
    # problem 0: two graded; problem 1: one graded, one failed; problem 2: never seen
    metric.update(torch.tensor([7.0, 0.0, 7.0, NAN]), torch.tensor([0, 0, 1, 1]))
    assert metric.compute().item() == pytest.approx(100.0)  # only problem 0: 1 - C(1,2)/C(2,2)
    assert metric.counts() == (1, 1)
    with pytest.raises(ValueError):
        pass_at_k(1, 1, 2)


def _values(metric):
    out = metric.compute()
    return torch.cat([torch.atleast_1d(t) for t in (out if isinstance(out, tuple) else (out,))])


def test_ddp_shards_merge_to_the_single_process_result():
    scores, problem, run = _flat([[7, 0, 7], [1, 6, 7], [0, 0, 7], [7, 7, 7]])
    whole_avg, whole_pass = AvgAtK(3), PassAtK(2, num_problems=4)
    whole_avg.update(scores, run)
    whole_pass.update(scores, problem)
    # rank 0 gets problems 0-1, rank 1 problems 2-3 (DistributedSampler-like) ...
    shards = [problem < 2, problem >= 2]
    # ... and for pass@k also a split that cuts problems' samples across ranks (run 0 vs 1-2)
    split = [run == 0, run > 0]
    for masks in (shards, split):
        avg = [AvgAtK(3) for _ in masks]
        passes = [PassAtK(2, num_problems=4) for _ in masks]
        for a, p, m in zip(avg, passes, masks):
            a.update(scores[m], run[m])
            p.update(scores[m], problem[m])
        avg[0].merge_state(avg[1])
        passes[0].merge_state(passes[1])
        for merged, whole in ((avg[0], whole_avg), (passes[0], whole_pass)):
            torch.testing.assert_close(_values(merged), _values(whole), equal_nan=True)
    # merge_state applies each state's dist_reduce_fx: summing the raw states is the same
    a, b = AvgAtK(3), AvgAtK(3)
    a.update(scores[:6], run[:6])
    b.update(scores[6:], run[6:])
    torch.testing.assert_close(a.run_sum + b.run_sum, whole_avg.run_sum)


def _record(problem, sample, score, *, category="alg", level="easy", tokens=100, finish="stop"):
    return EvalRecord(benchmark="b", model="m", problem_id=problem, sample=sample, text="", answer="",
                      tokens=tokens, finish_reason=finish, score=score, category=category, level=level)


def test_summarize_records_by_hand():
    records = [
        _record("p0", 0, 7, tokens=10), _record("p0", 1, 0, tokens=20), _record("p0", 2, 7, tokens=30),
        _record("p1", 0, 1, category="geo", tokens=40), _record("p1", 1, None, category="geo", tokens=50),
        _record("p1", 2, 7, category="geo", level="hard", tokens=60, finish="length"),
    ]
    got = summarize_records(records, k=3, failed_gradings="leave_out")
    # runs: run0 (7+1)/2 = 4, run1 0/1 = 0 (p1 failed), run2 (7+7)/2 = 7 -> mean 11/3 of 7
    assert got["avg"] == pytest.approx(11 / 3 / 7 * 100)
    assert got["runs"] == pytest.approx([400 / 7, 0.0, 100.0])
    # spread (ddof=1) of run means 4, 0, 7: deviations 1/3, -11/3, 10/3; squares sum 222/9; /2 = 37/3
    assert got["spread"] == pytest.approx(100 * math.sqrt(37 / 3) / 7, rel=1e-5)
    # pass@1: p0 2/3, p1 1/2 (n=2 graded, c=1) -> 7/12; pass@3: p0 1, p1 skipped (n=2 < 3)
    assert got["pass_at_1"] == pytest.approx(700 / 12)
    assert got["pass_at_k"] == pytest.approx(100.0)
    assert (got["pass_at_k_problems"], got["pass_at_k_short"]) == (1, 1)
    assert got["accuracy"] == pytest.approx(300 / 5)  # 3 sevens among 5 graded
    # alg = p0 alone: runs 7, 0, 7 -> 2/3; geo = p1: runs 1, (failed), 7 -> NaN run left out
    assert got["by_category"] == pytest.approx({"alg": 200 / 3, "geo": (100 / 7 + 100) / 2})
    # easy = p0 + p1's runs 0-1: runs (7+1)/2, 0/1, 7 -> (4 + 0 + 7)/3; hard = p1's run 2 alone
    assert got["by_level"] == pytest.approx({"easy": 11 / 3 / 7 * 100, "hard": 100.0})
    assert got["tokens_mean"] == 35 and got["tokens_median"] == 35
    assert got["failure_rate"] == pytest.approx(1 / 6)
    assert (got["total"], got["graded"], got["failed"], got["truncated"], got["problems"]) == (6, 5, 1, 1, 2)


def test_summarize_matches_the_metrics_and_rejects_duplicates():
    scores, problem, run = _flat(SCORES)
    records = [_record(f"p{p}", int(r), float(s)) for s, p, r in zip(scores, problem.tolist(), run)]
    metric = AvgAtK(3)
    metric.update(scores, run)
    got = summarize_records(records, k=3)
    assert got["avg"] == pytest.approx(metric.compute()[0].item())
    assert got["spread"] == pytest.approx(metric.compute()[1].item())
    with pytest.raises(ValueError, match="duplicate"):
        summarize_records(records + records[:1], k=3)


def test_undefined_values_are_none_for_the_report():
    empty = summarize_records([], k=3)
    assert empty["total"] == 0 and empty["avg"] is None and empty["pass_at_k"] is None
    assert empty["runs"] == [None, None, None] and empty["accuracy"] is None
    one_run = summarize_records([_record("p0", 0, 7), _record("p1", 0, None)], k=1, failed_gradings="leave_out")
    assert one_run["avg"] == 100.0 and one_run["spread"] is None  # ddof=1 needs two runs
    assert summarize_records([_record("p0", 0, 7), _record("p1", 0, None)], k=1)["avg"] == 50.0  # zero: 7 and 0


# The released stats.py's case: IMO-ProofBench ids, 3 runs, failed gradings (None).
#                    run 0  run 1  run 2
STATS_TABLE = {"PB-Basic-001": [7, 6, 7],
               "PB-Basic-002": [1, None, 0],
               "PB-Advanced-001": [0, 7, None],
               "PB-Advanced-002": [None, 1, 6]}


def _stats_records(judge=""):
    return [EvalRecord("imo_proofbench", "m", pid, run, "", "", 1, "stop", score,
                       None if score is not None else "no_verdict: x", judge=judge)
            for pid, scores in STATS_TABLE.items() for run, score in enumerate(scores)]


def test_zero_rule_reproduces_the_released_stats_numbers():
    got = summarize_records(_stats_records(), k=3)  # the default rule
    assert got["failed_gradings"] == "zero"
    # a failed grading is 0: run means (of 7) (7+1+0+0)/4 = 2, (6+0+7+1)/4 = 3.5, (7+0+0+6)/4 = 3.25
    assert got["runs"] == pytest.approx([200 / 7, 350 / 7, 325 / 7])
    assert got["avg"] == pytest.approx(8.75 / 3 / 7 * 100)  # 2.9167 of 7, as stats.py prints
    # sample std (ddof=1): deviations from 35/12 are -11/12, 7/12, 4/12; squares 186/144; /2
    assert got["spread"] == pytest.approx(100 / 7 * math.sqrt(31 / 48), rel=1e-6)  # 0.8036 of 7
    # Basic: runs (7+1)/2, (6+0)/2, (7+0)/2 -> 3.5 of 7; Advanced: 0, (7+1)/2, (0+6)/2 -> 7/3
    assert got["splits"] == pytest.approx({"PB-Basic": 50.0, "PB-Advanced": 100 / 3})
    assert list(got["splits"]) == ["PB-Basic", "PB-Advanced"]
    # unbiased pass@k with n = 3 for every problem; successes (7s): 2, 0, 1, 0
    assert got["pass_at_1"] == pytest.approx((2 / 3 + 0 + 1 / 3 + 0) / 4 * 100)
    assert got["pass_at_k"] == pytest.approx(50.0)  # 1 - C(n-c,3)/C(3,3): 1, 0, 1, 0
    assert (got["pass_at_k_problems"], got["pass_at_k_short"]) == (4, 0)
    assert got["accuracy"] == pytest.approx(300 / 12)  # 3 sevens among all 12 samples
    assert (got["graded"], got["failed"], got["failure_rate"]) == (9, 3, 0.25)  # the counts do not change


def test_leave_out_rule_on_the_same_table():
    got = summarize_records(_stats_records(), k=3, failed_gradings="leave_out")
    # run means over graded samples only: 8/3, 14/3, 13/3 -> 35/9 of 7
    assert got["runs"] == pytest.approx([800 / 21, 1400 / 21, 1300 / 21])
    assert got["avg"] == pytest.approx(500 / 9)
    # deviations from 35/9: -11/9, 7/9, 4/9; squares 186/81; /2 -> sqrt(93)/9
    assert got["spread"] == pytest.approx(100 / 7 * math.sqrt(93) / 9, rel=1e-6)
    # Basic: runs 4, 6/1, 3.5 -> 4.5 of 7; Advanced: 0/1, 4, 6/1 -> 10/3
    assert got["splits"] == pytest.approx({"PB-Basic": 450 / 7, "PB-Advanced": 1000 / 21})
    # pass@1 over graded samples: 2/3, 0/2, 1/2, 0/2; pass@3 only PB-Basic-001 has 3 graded
    assert got["pass_at_1"] == pytest.approx((2 / 3 + 1 / 2) / 4 * 100)
    assert got["pass_at_k"] == pytest.approx(100.0)
    assert (got["pass_at_k_problems"], got["pass_at_k_short"]) == (1, 3)
    assert got["accuracy"] == pytest.approx(300 / 9)
    # both rules always come along, the chosen one also at the top level
    assert got["by_rule"]["leave_out"]["avg"] == got["avg"]
    assert got["by_rule"]["zero"]["avg"] == pytest.approx(8.75 / 3 / 7 * 100)


def test_no_failures_means_both_rules_agree_and_unknown_rules_are_refused():
    records = [r for r in _stats_records() if r.score is not None]
    got = summarize_records(records, k=3)
    for key in ("avg", "spread", "pass_at_1", "pass_at_k", "accuracy", "splits"):
        assert got["by_rule"]["zero"][key] == got["by_rule"]["leave_out"][key]
    with pytest.raises(ValueError, match="failed_gradings must be one of"):
        summarize_records(records, k=3, failed_gradings="drop")


def test_splits_only_for_benchmarks_that_have_them():
    records = [dataclasses.replace(r, benchmark="proofbench") for r in _stats_records()]
    assert summarize_records(records, k=3)["splits"] == {}


def test_records_of_two_judges_are_not_summarized_together():
    first = _stats_records(judge="judge A")
    second = [dataclasses.replace(r, judge="judge B", sample=r.sample + 3) for r in first]
    with pytest.raises(ValueError, match="2 judges .*'judge A', 'judge B'"):
        summarize_records(first + second, k=3)
