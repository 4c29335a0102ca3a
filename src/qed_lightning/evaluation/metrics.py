"""Evaluation metrics: avg@k with its spread across runs, unbiased pass@k, and
``summarize_records``, which computes every number of the report from the saved
``EvalRecord`` lines with the same Metric classes that run under DDP.

Failed gradings (``score is None``) enter the metrics as NaN: they are excluded from
means and counted, never scored 0. (The released QED-Nano ``stats.py`` fills them with
0; we keep them out so a flaky judge lowers coverage, not the score, and report the
failure rate beside the score.) Every percentage is of the maximum score 7.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

import torch
from torch import Tensor
from torchmetrics import Metric

from qed_lightning.evaluation.records import MAX_SCORE, EvalRecord

__all__ = ["AvgAtK", "PassAtK", "pass_at_k", "summarize_records"]


class AvgAtK(Metric):
    """avg@k: each run's mean score as % of 7, averaged over the k runs, and its std.

    The std uses ddof=1 (the sample std of k run means), as the released QED-Nano
    ``stats.py`` does (``np.std(run_means, ddof=1)``), so our "(spread)" compares with
    the paper's parentheses; it is NaN for k=1. A run with no graded sample has a NaN
    mean and is left out of the mean and std (NaN when no run has any).

    Args:
        k: Number of runs; ``sample_index`` must lie in ``0..k-1``.
        max_score: The top score, 7.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int = 3, max_score: float = MAX_SCORE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k, self.max_score = k, max_score
        # Per-run sums and counts add across ranks whatever the sharding.
        self.add_state("run_sum", torch.zeros(k), dist_reduce_fx="sum")
        self.add_state("run_count", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("failed", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, sample_index: Tensor) -> None:
        """Args: scores [N] float in 0..7, NaN where grading failed; sample_index [N] long."""
        if sample_index.numel() and (sample_index.min() < 0 or sample_index.max() >= self.k):
            raise ValueError(f"sample_index must lie in 0..{self.k - 1}")
        graded = ~torch.isnan(scores)  # [N]
        self.failed += (~graded).sum()
        idx = sample_index[graded]  # [G]
        self.run_sum.index_add_(0, idx, scores[graded].to(self.run_sum.dtype))
        self.run_count.index_add_(0, idx, torch.ones_like(idx))

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (mean %, std % across runs, per-run % [k]; 0-d when k=1, as torchmetrics
        squeezes one-element outputs)."""
        per_run = 100 * self.run_sum / self.run_count / self.max_score  # [k], 0/0 -> NaN
        done = per_run[~torch.isnan(per_run)]  # [R] runs with something graded
        nan = torch.tensor(float("nan"), device=per_run.device)
        mean = done.mean() if done.numel() else nan
        std = done.std(correction=1) if done.numel() > 1 else nan
        return mean, std, per_run


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n graded samples, c of them successes:
    1 - C(n-c, k) / C(n, k), the chance that k samples drawn without replacement
    contain a success. Exact integer binomials, so no overflow or rounding for any n."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


class PassAtK(Metric):
    """pass@k (in %): the unbiased estimator per problem, averaged over problems.

    The states are per-problem counts (graded samples n, successes c) indexed by a
    dense problem index ``0..num_problems-1``, summed across ranks: the sum is right
    however problems or their samples are sharded, even when one problem's samples
    arrive in different ``update`` calls (one call per run) or on different ranks.
    Problems with fewer than k graded samples are left out (the estimator needs n >= k);
    ``counts()`` tells how many were used. Success means the top score (7; on
    AnswerBench, a correct answer).

    Args:
        k: Samples per attempt.
        num_problems: Size of the problem index (the benchmark's problem count).
        max_score: The score that counts as a success.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int, num_problems: int, max_score: float = MAX_SCORE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k, self.max_score = k, max_score
        self.add_state("graded", torch.zeros(num_problems, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(num_problems, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, problem_index: Tensor) -> None:
        """Args: scores [N] float, NaN where grading failed; problem_index [N] long."""
        ok = ~torch.isnan(scores)  # [N]
        idx = problem_index[ok]  # [G]
        self.graded.index_add_(0, idx, torch.ones_like(idx))
        self.correct.index_add_(0, idx, (scores[ok] >= self.max_score).long())

    def counts(self) -> tuple[int, int]:
        """(problems used: n >= k, problems seen but with 0 < n < k graded samples)."""
        n = self.graded
        return int((n >= self.k).sum()), int(((n > 0) & (n < self.k)).sum())

    def compute(self) -> Tensor:
        pairs = zip(self.graded.tolist(), self.correct.tolist())  # exact ints: math.comb, no overflow
        values = [pass_at_k(n, c, self.k) for n, c in pairs if n >= self.k]
        mean = sum(values) / len(values) if values else float("nan")
        return torch.tensor(100 * mean, device=self.graded.device)


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def _avg(records: list[EvalRecord], k: int) -> tuple[float | None, float | None, list[float | None]]:
    """(avg@k %, spread %, per-run %) over runs 0..k-1, None where undefined."""
    metric = AvgAtK(k)
    runs = [r for r in records if r.sample < k]
    metric.update(_scores(runs), torch.tensor([r.sample for r in runs], dtype=torch.long))
    mean, std, per_run = metric.compute()
    per_run = torch.atleast_1d(per_run)  # torchmetrics squeezes a one-element [k] when k=1
    return _none_if_nan(mean.item()), _none_if_nan(std.item()), [_none_if_nan(x) for x in per_run.tolist()]


def _scores(records: list[EvalRecord]) -> Tensor:
    return torch.tensor([float("nan") if r.score is None else float(r.score) for r in records],
                        dtype=torch.float)  # [N]


def _breakdown(records: list[EvalRecord], k: int, field: str) -> dict[str, float | None]:
    groups: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        if getattr(r, field) is not None:
            groups[str(getattr(r, field))].append(r)
    return {name: _avg(group, k)[0] for name, group in sorted(groups.items())}


def summarize_records(records: list[EvalRecord], k: int) -> dict:
    """Every number the report shows, from one model's records on one benchmark, with
    the keys of ``report.py``'s summary contract (plus a few counts). Percentages are
    0..100; anything undefined (nothing graded, one run's spread) is None.

    avg/spread/runs: avg@k over runs (``sample``) 0..k-1; by_category/by_level: the
    same avg@k within each group. pass_at_1/pass_at_k use every graded sample of a
    problem (the unbiased estimator gains from n > k); ``*_problems`` counts the
    problems it averaged, ``*_short`` those left out with fewer than k graded samples.
    accuracy: share of graded samples scoring 7 (AnswerBench's headline; computed for
    every benchmark, the report reads it only for answer benchmarks). Raises on
    duplicate (benchmark, problem_id, sample) records.
    """
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate (benchmark, problem_id, sample) records: deduplicate first")
    index = {p: i for i, p in enumerate(dict.fromkeys((r.benchmark, r.problem_id) for r in records))}
    problem_index = torch.tensor([index[(r.benchmark, r.problem_id)] for r in records], dtype=torch.long)
    scores = _scores(records)  # [N]
    passes = {}
    for name, kk in (("pass_at_1", 1), ("pass_at_k", k)):
        metric = PassAtK(kk, num_problems=len(index))
        metric.update(scores, problem_index)
        passes[name] = _none_if_nan(metric.compute().item())
        passes[f"{name}_problems"], passes[f"{name}_short"] = metric.counts()
    graded = [r for r in records if r.graded]
    tokens = [r.tokens for r in records]
    avg, spread, runs = _avg(records, k)
    return {
        "k": k,
        "avg": avg,
        "spread": spread,
        "runs": runs,
        **passes,
        "accuracy": 100 * sum(r.score >= MAX_SCORE for r in graded) / len(graded) if graded else None,
        "by_category": _breakdown(records, k, "category"),
        "by_level": _breakdown(records, k, "level"),
        "tokens_mean": statistics.fmean(tokens) if tokens else None,
        "tokens_median": float(statistics.median(tokens)) if tokens else None,
        "failure_rate": (len(records) - len(graded)) / len(records) if records else None,
        "total": len(records),
        "graded": len(graded),
        "failed": len(records) - len(graded),
        "truncated": sum(r.finish_reason == "length" for r in records),
        "problems": len(index),
    }
