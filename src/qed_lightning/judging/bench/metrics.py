"""How far a grader's scores are from human grades: pure functions on the 0-7 scale.

g is the grader's score, h the human grade of the same proof. Rows are proofs; a
problem groups the proofs written for it (the GRPO group of the paper's training).

* **MAE**: mean |g - h| over proofs, in points.
* **Mean signed error**: mean (g - h); positive means the grader is lenient.
* **Bucket accuracy**: share of proofs whose g and h fall in the same bucket of
  {0}, {1-3}, {4-6}, {7}; a fractional score (an average of several humans) is first
  rounded to the nearest point, halves up.
* **Order consistency**, per problem then averaged over problems with two or more
  proofs: the share of proof pairs (i < j) the grader orders as the humans do. Ties
  are explicit: a pair agrees when sign(g_i - g_j) == sign(h_i - h_j), so a pair the
  humans tie agrees only when the grader ties it too. ``order_consistency_le`` is the
  released evaluation code's rule, (g_i <= g_j) == (h_i <= h_j): it treats a tie like
  "i below j", so its value on tied pairs depends on the order of the rows; it is kept
  for comparison with that code's numbers.
* **Advantage error**, per problem with two or more proofs then averaged over those
  problems: mean |(g_i - mean g) - (h_i - mean h)|, the error in points of the
  group-mean advantage the paper's RL uses (no division by the standard deviation).
  A one-proof problem has advantage 0 under both and is left out, as in the released code.
* **Failure rate**: share of proofs without a verdict (no verdict in the reply, a score
  off the scale, a timeout or any other counted error). How failures enter the other
  metrics is :data:`FAILURE_POLICIES`.

Every agreement metric is a ratio of per-problem sums (:func:`problem_table`), so the
bootstrap over problems (``bootstrap.py``) re-weights the same table that gives the
point estimate (:func:`combine`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "BUCKETS", "FAILURE_POLICIES", "METRICS", "PAIR_RULES", "ScoredRow", "advantage_error", "bucket",
    "bucket_accuracy", "combine", "confusion", "mae", "mean_signed_error", "order_consistency", "percentile",
    "point_estimates", "problem_table",
]

# bucket index -> the scores it holds (the released code's accuracy buckets)
BUCKETS = ((0,), (1, 2, 3), (4, 5, 6), (7,))
_BUCKET_OF = {s: i for i, scores in enumerate(BUCKETS) for s in scores}

# how a proof without a verdict enters the agreement metrics (the failure rate counts it either way)
FAILURE_POLICIES = {
    "zero": "scored 0, as the released evaluation code fills a missing grade and as RL's on_failure: zero rewards it",
    "drop": "left out of the agreement metrics (a problem's pairs and group mean use its graded proofs only)",
}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


# pair rule -> does the grader order proofs i, j as the humans do
PAIR_RULES = {
    "sign": lambda gi, gj, hi, hj: _sign(gi - gj) == _sign(hi - hj),
    "le": lambda gi, gj, hi, hj: (gi <= gj) == (hi <= hj),
}


@dataclass(frozen=True)
class ScoredRow:
    """One graded proof.

    Args:
        problem: The problem it answers (groups rows for the per-problem metrics).
        human: The human grade, 0..7 (may be fractional: a mean of several graders).
        grade: The grader's score, or None when it gave no verdict.
        error_kind: Why there is no verdict (``timeout``, ``no_verdict``...).
        tokens: Tokens the grader generated for this proof in this run (None: unknown,
            or no call was made).
    """

    problem: str
    human: float
    grade: float | None
    error_kind: str | None = None
    tokens: int | None = None


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def bucket(score: float) -> int:
    """Index into :data:`BUCKETS` of ``score`` rounded to the nearest point (halves up)."""
    return _BUCKET_OF[min(7, max(0, round_half_up(score)))]


def mae(g: Sequence[float], h: Sequence[float]) -> float:
    """Mean |g - h|; g, h: [N]."""
    return float(np.mean(np.abs(np.asarray(g, float) - np.asarray(h, float))))


def mean_signed_error(g: Sequence[float], h: Sequence[float]) -> float:
    """Mean g - h (positive: lenient); g, h: [N]."""
    return float(np.mean(np.asarray(g, float) - np.asarray(h, float)))


def bucket_accuracy(g: Sequence[float], h: Sequence[float]) -> float:
    """Share of proofs with g and h in the same :data:`BUCKETS` bucket; g, h: [N]."""
    return sum(bucket(a) == bucket(b) for a, b in zip(g, h, strict=True)) / len(g)


def order_consistency(g: Sequence[float], h: Sequence[float], rule: str = "sign") -> float | None:
    """Share of pairs i < j of ONE problem's proofs that ``rule`` (:data:`PAIR_RULES`)
    counts as ordered alike; None with fewer than two proofs. g, h: [n]."""
    agree = PAIR_RULES[rule]
    pairs = [agree(g[i], g[j], h[i], h[j]) for i in range(len(g)) for j in range(i + 1, len(g))]
    return sum(pairs) / len(pairs) if pairs else None


def advantage_error(g: Sequence[float], h: Sequence[float]) -> float | None:
    """Mean |(g_i - mean g) - (h_i - mean h)| over ONE problem's proofs; None with fewer
    than two proofs. g, h: [n]."""
    if len(g) < 2:
        return None
    ga, ha = np.asarray(g, float), np.asarray(h, float)
    return float(np.mean(np.abs((ga - ga.mean()) - (ha - ha.mean()))))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between order statistics (the
    default of numpy and pandas); None for no values."""
    return float(np.quantile(np.asarray(values, float), q)) if len(values) else None


def _agreement_rows(rows: Sequence[ScoredRow], failures: str) -> list[tuple[float, float]]:
    if failures not in FAILURE_POLICIES:
        raise ValueError(f"failures must be one of {sorted(FAILURE_POLICIES)}, got {failures!r}")
    if failures == "zero":
        return [(0.0 if r.grade is None else float(r.grade), float(r.human)) for r in rows]
    return [(float(r.grade), float(r.human)) for r in rows if r.grade is not None]


# the per-problem sums every metric is a ratio of: name -> (numerator column, denominator column)
METRICS = {
    "mae": ("abs_err", "n"),
    "mean_signed_error": ("signed_err", "n"),
    "bucket_accuracy": ("bucket_hits", "n"),
    "order_consistency": ("pairs_sign", "has_pairs"),
    "order_consistency_le": ("pairs_le", "has_pairs"),
    "advantage_error": ("adv_err", "has_pairs"),
    "failure_rate": ("failures", "rows"),
    "tokens_mean": ("tokens", "tokened"),
}


def problem_table(rows: Sequence[ScoredRow], failures: str = "zero") -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-problem sums: (problem ids in first-seen order, column -> [P] array).

    ``rows`` counts every proof; ``n`` those in the agreement metrics (all of them under
    ``failures="zero"``, the graded ones under ``"drop"``); ``has_pairs`` is 1 for a
    problem with two or more such proofs, and ``pairs_*``/``adv_err`` then hold its
    per-problem value (0 otherwise).
    """
    groups: dict[str, list[ScoredRow]] = {}
    for row in rows:
        groups.setdefault(row.problem, []).append(row)
    cols: dict[str, list[float]] = {name: [] for name in
                                    ("rows", "n", "abs_err", "signed_err", "bucket_hits", "failures", "has_pairs",
                                     "pairs_sign", "pairs_le", "adv_err", "tokens", "tokened")}
    for group in groups.values():
        gh = _agreement_rows(group, failures)
        g, h = [a for a, _ in gh], [b for _, b in gh]
        pairs = order_consistency(g, h, "sign")
        cols["rows"].append(len(group))
        cols["n"].append(len(gh))
        cols["abs_err"].append(sum(abs(a - b) for a, b in gh))
        cols["signed_err"].append(sum(a - b for a, b in gh))
        cols["bucket_hits"].append(sum(bucket(a) == bucket(b) for a, b in gh))
        cols["failures"].append(sum(r.grade is None for r in group))
        cols["has_pairs"].append(0.0 if pairs is None else 1.0)
        cols["pairs_sign"].append(pairs or 0.0)
        cols["pairs_le"].append(order_consistency(g, h, "le") or 0.0)
        cols["adv_err"].append(advantage_error(g, h) or 0.0)
        cols["tokens"].append(sum(r.tokens for r in group if r.tokens is not None))
        cols["tokened"].append(sum(r.tokens is not None for r in group))
    return list(groups), {name: np.asarray(values, dtype=np.float64) for name, values in cols.items()}


def combine(table: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every :data:`METRICS` entry under per-problem ``weights`` [B, P] (how many times
    each problem is drawn): metric -> [B]. A ratio whose denominator is 0 is NaN."""
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (num, den) in METRICS.items():
            # a problem without pairs holds 0 in its pair columns and in has_pairs: it drops out of both sums
            out[name] = (weights @ table[num]) / (weights @ table[den])  # [B]
    return out


def point_estimates(table: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Every metric on the data as it is (each problem once); None where undefined."""
    values = combine(table, np.ones((1, len(table["rows"]))))
    return {name: (None if math.isnan(v[0]) else float(v[0])) for name, v in values.items()}


def confusion(rows: Sequence[ScoredRow]) -> list[list[int]]:
    """Counts [8][9]: row = human grade (rounded), column = grader score 0..7, and
    column 8 = no verdict."""
    table = [[0] * 9 for _ in range(8)]
    for r in rows:
        human = min(7, max(0, round_half_up(r.human)))
        table[human][8 if r.grade is None else min(7, max(0, round_half_up(r.grade)))] += 1
    return table
