"""``qed judge bench`` metrics and bootstrap against hand computations.

The table (human h, grader g; None = no verdict):
  p1: (7, 7), (3, 4), (0, 0)      three proofs
  p2: (5, 2), (5, 5)              humans tie
  p3: (6, None)                   one proof, failed
"""
from __future__ import annotations

import numpy as np
import pytest

from qed_lightning.judging.bench import bootstrap
from qed_lightning.judging.bench.metrics import (
    ScoredRow, advantage_error, bucket, bucket_accuracy, combine, confusion, mae, mean_signed_error,
    order_consistency, percentile, point_estimates, problem_table,
)

ROWS = [ScoredRow("p1", 7, 7, tokens=10), ScoredRow("p1", 3, 4, tokens=20), ScoredRow("p1", 0, 0, tokens=30),
        ScoredRow("p2", 5, 2, tokens=40), ScoredRow("p2", 5, 5), ScoredRow("p3", 6, None, "timeout")]


def test_every_metric_by_hand_with_failures_scored_zero():
    m = point_estimates(problem_table(ROWS, "zero")[1])
    # |g - h|: 0, 1, 0, 3, 0, 6 (the failure counts as a 0 against a human 6)
    assert m["mae"] == pytest.approx(10 / 6)
    assert m["mean_signed_error"] == pytest.approx((1 - 3 - 6) / 6)
    # buckets: 7|7 yes, 4|3 no, 0|0 yes, 2|5 no, 5|5 yes, 0|6 no
    assert m["bucket_accuracy"] == pytest.approx(3 / 6)
    # p1: all 3 pairs agree; p2: humans tie, grader does not -> 0; p3 has no pair
    assert m["order_consistency"] == pytest.approx((1 + 0) / 2)
    assert m["order_consistency_le"] == pytest.approx((1 + 1) / 2)  # (2<=5)==(5<=5): a tie counts as "below"
    # p1: g - mean g = (10, 1, -11)/3, h - mean h = (11, -1, -10)/3 -> |diff| = (1, 2, 1)/3, mean 4/9
    # p2: g adv (-1.5, 1.5), h adv (0, 0) -> 1.5; p3 (one proof) left out
    assert m["advantage_error"] == pytest.approx((4 / 9 + 1.5) / 2)
    assert m["failure_rate"] == pytest.approx(1 / 6)
    assert m["tokens_mean"] == pytest.approx(100 / 4)  # over the proofs with a known count


def test_dropping_failures_leaves_them_out_of_agreement_but_not_of_the_failure_rate():
    m = point_estimates(problem_table(ROWS, "drop")[1])
    assert m["mae"] == pytest.approx(4 / 5)
    assert m["mean_signed_error"] == pytest.approx(-2 / 5)
    assert m["bucket_accuracy"] == pytest.approx(3 / 5)
    assert m["advantage_error"] == pytest.approx((4 / 9 + 1.5) / 2)
    assert m["failure_rate"] == pytest.approx(1 / 6)


def test_a_failure_inside_a_group_changes_its_mean_only_under_zero():
    rows = [ScoredRow("p", 2, 2), ScoredRow("p", 4, 4), ScoredRow("p", 6, None)]
    # zero: g = (2, 4, 0), mean 2; h = (2, 4, 6), mean 4 -> adv diffs (2, 2, -4) -> mean 8/3
    assert point_estimates(problem_table(rows, "zero")[1])["advantage_error"] == pytest.approx(8 / 3)
    assert point_estimates(problem_table(rows, "drop")[1])["advantage_error"] == pytest.approx(0.0)


def test_single_proof_problems_count_in_mae_but_not_in_pair_metrics():
    extra = [*ROWS, ScoredRow("p4", 1, 4)]
    m, base = point_estimates(problem_table(extra)[1]), point_estimates(problem_table(ROWS)[1])
    assert m["mae"] == pytest.approx(13 / 7)
    assert m["advantage_error"] == base["advantage_error"]
    assert m["order_consistency"] == base["order_consistency"]
    only_singles = point_estimates(problem_table([ScoredRow("a", 1, 2), ScoredRow("b", 3, 3)])[1])
    assert only_singles["advantage_error"] is None and only_singles["order_consistency"] is None


def test_tie_rules():
    # grader ties a pair the humans order: disagreement under both rules... except "le" when h_i < h_j
    assert order_consistency([3, 3], [2, 5], "sign") == 0.0
    assert order_consistency([3, 3], [2, 5], "le") == 1.0
    assert order_consistency([3, 3], [5, 2], "le") == 0.0
    # humans tie: sign agrees only with a grader tie; the "le" rule depends on the order of the rows
    assert order_consistency([4, 4], [5, 5], "sign") == 1.0
    assert order_consistency([2, 4], [5, 5], "sign") == 0.0
    assert order_consistency([2, 4], [5, 5], "le") == 1.0 and order_consistency([4, 2], [5, 5], "le") == 0.0
    assert order_consistency([1, 2, 3], [1, 3, 2], "sign") == pytest.approx(2 / 3)
    assert order_consistency([1], [1]) is None


def test_scalar_helpers():
    assert mae([1, 2], [3, 2]) == 1.0 and mean_signed_error([1, 2], [3, 2]) == -1.0
    assert [bucket(x) for x in (0, 0.49, 0.5, 3, 3.49, 3.5, 6, 6.49, 6.5, 7)] == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert bucket_accuracy([0, 1, 3, 4, 7], [0, 3, 4, 6, 6]) == pytest.approx(3 / 5)
    assert advantage_error([1, 1], [0, 4]) == pytest.approx(2.0)
    assert advantage_error([3], [5]) is None
    assert percentile(list(range(1, 21)), 0.95) == pytest.approx(19.05)  # linear between the 19th and 20th
    assert percentile([], 0.95) is None


def test_confusion_counts_failures_in_their_own_column():
    table = confusion(ROWS)
    assert len(table) == 8 and all(len(r) == 9 for r in table)
    assert table[7][7] == 1 and table[3][4] == 1 and table[0][0] == 1 and table[5][2] == 1 and table[5][5] == 1
    assert table[6][8] == 1 and sum(map(sum, table)) == 6


def test_a_problem_drawn_twice_counts_twice():
    _, table = problem_table(ROWS)
    weighted = combine(table, np.array([[2.0, 0.0, 1.0]]))
    doubled = [ScoredRow(r.problem + suffix, r.human, r.grade, r.error_kind, r.tokens)
               for suffix in ("", "'") for r in ROWS if r.problem == "p1"] + [r for r in ROWS if r.problem == "p3"]
    expected = point_estimates(problem_table(doubled)[1])
    for name, value in expected.items():
        assert weighted[name][0] == pytest.approx(value, nan_ok=True), name


def test_intervals_are_seeded_and_bracket_the_estimate():
    rows = [ScoredRow(f"p{i}", h, g) for i in range(12) for h, g in ((3.0, 3 + 0.1 * i * i % 3.7), (5.0, 4.0))]
    _, table = problem_table(rows)
    a, b = bootstrap.intervals(table, 300, seed=1), bootstrap.intervals(table, 300, seed=1)
    assert a == b
    assert bootstrap.intervals(table, 300, seed=2)["mae"] != a["mae"]
    est = point_estimates(table)
    assert a["mae"][0] < est["mae"] < a["mae"][1]


def test_paired_difference_of_a_grader_with_itself_is_exactly_zero():
    _, table = problem_table(ROWS)
    diffs = bootstrap.paired_differences(table, table, 200, seed=0)
    assert diffs["mae"] == {"diff": 0.0, "interval": (0.0, 0.0)}


def test_paired_difference_of_a_constant_shift():
    # grader B is exactly 1 point more lenient than A on every proof: the signed error differs by 1 in every draw
    rows_a = [ScoredRow(f"p{i}", 3, 3 + (i % 3) - 1) for i in range(9) for _ in range(2)]
    rows_b = [ScoredRow(r.problem, r.human, r.grade + 1) for r in rows_a]
    diffs = bootstrap.paired_differences(problem_table(rows_b)[1], problem_table(rows_a)[1], 200, seed=0)
    assert diffs["mean_signed_error"]["diff"] == pytest.approx(1.0)
    assert diffs["mean_signed_error"]["interval"] == pytest.approx((1.0, 1.0))


def _synthetic(rng: np.random.Generator, problems: int, per: int) -> list[ScoredRow]:
    # each problem has a bias of -1 or +1 shared by its proofs, plus noise in {-1, 0, 1}: the error is -2..0 or
    # 0..2, so E|g - h| = 1 and E[g - h] = 0, and proofs of one problem are correlated
    rows = []
    for p in range(problems):
        bias = rng.choice([-1, 1])
        for _ in range(per):
            human = float(rng.integers(2, 6))
            rows.append(ScoredRow(f"p{p}", human, human + bias + int(rng.integers(-1, 2))))
    return rows


def test_interval_coverage_on_synthetic_data_with_a_known_error():
    rng = np.random.default_rng(1234)
    reps, hits = 300, {"mae": 0, "mean_signed_error": 0}
    truth = {"mae": 1.0, "mean_signed_error": 0.0}
    for rep in range(reps):
        _, table = problem_table(_synthetic(rng, problems=40, per=4))
        ci = bootstrap.intervals(table, n_boot=400, seed=rep)
        for name in hits:
            hits[name] += ci[name][0] <= truth[name] <= ci[name][1]
    # nominal 95%; a percentile bootstrap over 40 clusters runs a little under it. 300 reps: sd ~1.3 points
    for name, n in hits.items():
        assert 0.89 <= n / reps <= 0.99, (name, n / reps)
