"""Percentile bootstrap over problems: how sure a metric is, and whether two graders differ.

Proofs of one problem are not independent (a hard problem fools a grader on all of
them), so the unit resampled is the problem: each replicate draws P problems with
replacement and recomputes every metric from the per-problem sums of
``metrics.problem_table`` (a problem drawn twice counts twice). The interval is the
(1-level)/2 and (1+level)/2 quantiles of the replicates. Two graders measured on the
same problems share the draws, so the interval of their difference is paired.
"""
from __future__ import annotations

import math

import numpy as np

from qed_lightning.judging.bench.metrics import combine

__all__ = ["intervals", "paired_differences", "problem_draws"]


def problem_draws(n_problems: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_problems] counts: how often each problem is drawn in each replicate."""
    if n_problems < 1 or n_boot < 1:
        raise ValueError(f"bootstrap needs at least one problem and one replicate, got {n_problems}, {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_problems, np.full(n_problems, 1.0 / n_problems), size=n_boot).astype(np.float64)


def _interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = values[~np.isnan(values)]  # a replicate without a two-proof problem has no pair metrics
    if not len(values):
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def intervals(table: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """metric -> (low, high) percentile interval over problems, None where undefined."""
    draws = problem_draws(len(table["rows"]), n_boot, seed)
    return {name: _interval(values, level) for name, values in combine(table, draws).items()}


def paired_differences(table_a: dict[str, np.ndarray], table_b: dict[str, np.ndarray], n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """metric -> {"diff": a - b, "interval": (low, high) or None} with both tables (same
    problems, same order) re-weighted by the same draws."""
    if len(table_a["rows"]) != len(table_b["rows"]):
        raise ValueError("paired bootstrap needs the same problems in both tables")
    draws = problem_draws(len(table_a["rows"]), n_boot, seed)
    ones = np.ones((1, draws.shape[1]))
    a, b = combine(table_a, draws), combine(table_b, draws)
    pa, pb = combine(table_a, ones), combine(table_b, ones)
    out = {}
    for name in a:
        diff = float(pa[name][0] - pb[name][0])
        out[name] = {"diff": None if math.isnan(diff) else diff, "interval": _interval(a[name] - b[name], level)}
    return out
