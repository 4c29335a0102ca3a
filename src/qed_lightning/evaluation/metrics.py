"""Evaluation metrics: avg@k with its spread across runs, unbiased pass@k, and
``summarize_records``, which computes every number of the report from the saved
``EvalRecord`` lines with the same Metric classes that run under DDP.

Failed gradings (``score is None``: the judge failed, its verdict did not parse or was
off the scale, or the generation failed) enter the numbers by a named rule,
``failed_gradings`` (registry ``FAILED_GRADINGS``):

- ``zero`` (default): a failed grading scores 0, as the released QED-Nano ``stats.py``
  does when it averages several runs (``fillna(0)`` per run), so avg@3 compares with the
  paper's. (With a single run file that script takes pandas' NaN-skipping mean instead,
  i.e. ``leave_out``.)
- ``leave_out``: excluded from every mean and count, so a flaky judge lowers coverage
  rather than the score.

``summarize_records`` reports the chosen rule's numbers and, under ``by_rule``, every
rule's, so the report can show both when they differ. Every percentage is of the
maximum score 7.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from qed_lightning.evaluation.records import MAX_SCORE, EvalRecord

__all__ = ["FAILED_GRADINGS", "SPLITS", "AvgAtK", "PassAtK", "apply_failed_gradings", "pass_at_k",
           "summarize_records"]

# How a failed grading (NaN score) enters the numbers; ``failed_gradings`` names one.
FAILED_GRADINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "zero": lambda scores: torch.nan_to_num(scores, nan=0.0),  # the released stats.py over several runs
    "leave_out": lambda scores: scores,  # NaN stays NaN: every metric below skips it
}

# Problem-id groups a paper benchmark is also reported by (the released stats.py splits
# IMO-ProofBench by id, and the paper reports PB-Basic and PB-Advanced).
SPLITS: dict[str, dict[str, Callable[[str], bool]]] = {
    "imo_proofbench": {
        "PB-Basic": lambda problem_id: problem_id.startswith("PB-Basic"),
        "PB-Advanced": lambda problem_id: problem_id.startswith("PB-Advanced"),
    },
}


def apply_failed_gradings(scores: Tensor, rule: str) -> Tensor:
    """``scores`` [N] with NaN for failed gradings, under the rule named ``rule``."""
    try:
        return FAILED_GRADINGS[rule](scores)
    except KeyError:
        raise ValueError(f"failed_gradings must be one of {sorted(FAILED_GRADINGS)}, got {rule!r}") from None


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


def _avg(scores: Tensor, runs: Tensor, k: int) -> tuple[float | None, float | None, list[float | None]]:
    """(avg@k %, spread %, per-run %) over runs 0..k-1, None where undefined.
    scores [N] (NaN: left out), runs [N] sample indices."""
    metric = AvgAtK(k)
    keep = runs < k  # [N]
    metric.update(scores[keep], runs[keep])
    mean, std, per_run = metric.compute()
    per_run = torch.atleast_1d(per_run)  # torchmetrics squeezes a one-element [k] when k=1
    return _none_if_nan(mean.item()), _none_if_nan(std.item()), [_none_if_nan(x) for x in per_run.tolist()]


def _scores(records: list[EvalRecord]) -> Tensor:
    return torch.tensor([float("nan") if r.score is None else float(r.score) for r in records],
                        dtype=torch.float)  # [N]


def _grouped(names: list[str | None], scores: Tensor, runs: Tensor, k: int) -> dict[str, float | None]:
    """avg@k within each group; ``names`` [N] gives each record's group (None: in none)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        if name is not None:
            groups[name].append(i)
    return {name: _avg(scores[idx], runs[idx], k)[0] for name, idx in groups.items()}


def _split_of(record: EvalRecord) -> str | None:
    splits = SPLITS.get(record.benchmark, {})
    return next((name for name, belongs in splits.items() if belongs(record.problem_id)), None)


def _scored(records: list[EvalRecord], k: int, problem_index: Tensor, num_problems: int, rule: str) -> dict:
    """The numbers that depend on how failed gradings count, under ``rule``."""
    scores = apply_failed_gradings(_scores(records), rule)  # [N]
    runs = torch.tensor([r.sample for r in records], dtype=torch.long)  # [N]
    out = {}
    for name, kk in (("pass_at_1", 1), ("pass_at_k", k)):
        metric = PassAtK(kk, num_problems=num_problems)
        metric.update(scores, problem_index)
        out[name] = _none_if_nan(metric.compute().item())
        out[f"{name}_problems"], out[f"{name}_short"] = metric.counts()
    counted = scores[~torch.isnan(scores)]  # [C]
    out["accuracy"] = 100 * (counted >= MAX_SCORE).sum().item() / counted.numel() if counted.numel() else None
    out["avg"], out["spread"], out["runs"] = _avg(scores, runs, k)
    out["by_category"] = dict(sorted(_grouped([r.category for r in records], scores, runs, k).items()))
    out["by_level"] = dict(sorted(_grouped([r.level for r in records], scores, runs, k).items()))
    splits = _grouped([_split_of(r) for r in records], scores, runs, k)
    # in the registry's order (PB-Basic before PB-Advanced), only the splits present
    out["splits"] = {name: splits[name] for b in dict.fromkeys(r.benchmark for r in records)
                     for name in SPLITS.get(b, {}) if name in splits}
    return out


def summarize_records(records: list[EvalRecord], k: int, failed_gradings: str = "zero") -> dict:
    """Every number the report shows, from one model's records on one benchmark by one
    judge, with the keys of ``report.py``'s summary contract (plus a few counts).
    Percentages are 0..100; anything undefined (nothing graded, one run's spread) is None.

    avg/spread/runs: avg@k over runs (``sample``) 0..k-1; by_category/by_level/splits:
    the same avg@k within each group (``splits``: the benchmark's ``SPLITS``, e.g.
    PB-Basic and PB-Advanced). pass_at_1/pass_at_k use every counted sample of a
    problem (the unbiased estimator gains from n > k); ``*_problems`` counts the
    problems it averaged, ``*_short`` those left out with fewer than k counted samples.
    accuracy: share of counted samples scoring 7 (AnswerBench's headline; computed for
    every benchmark, the report reads it only for answer benchmarks). These follow the
    ``failed_gradings`` rule (module docstring); ``by_rule`` holds them under every rule.
    Raises on duplicate (benchmark, problem_id, sample) records and on records of more
    than one judge (their verdicts do not make one number).
    """
    if failed_gradings not in FAILED_GRADINGS:
        raise ValueError(f"failed_gradings must be one of {sorted(FAILED_GRADINGS)}, got {failed_gradings!r}")
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate (benchmark, problem_id, sample) records: deduplicate first")
    judges = sorted({r.judge for r in records})
    if len(judges) > 1:
        raise ValueError(f"records of {len(judges)} judges ({', '.join(map(repr, judges))}): verdicts of different "
                         "judges do not make one number; summarize each judge's records apart")
    index = {p: i for i, p in enumerate(dict.fromkeys((r.benchmark, r.problem_id) for r in records))}
    problem_index = torch.tensor([index[(r.benchmark, r.problem_id)] for r in records], dtype=torch.long)
    by_rule = {rule: _scored(records, k, problem_index, len(index), rule) for rule in FAILED_GRADINGS}
    graded = sum(r.graded for r in records)
    tokens = [r.tokens for r in records]
    return {
        "k": k,
        **by_rule[failed_gradings],
        "failed_gradings": failed_gradings,
        "by_rule": by_rule,
        "tokens_mean": statistics.fmean(tokens) if tokens else None,
        "tokens_median": float(statistics.median(tokens)) if tokens else None,
        "calls_mean": statistics.fmean(r.calls for r in records) if records else None,
        "failure_rate": (len(records) - graded) / len(records) if records else None,
        "total": len(records),
        "graded": graded,
        "failed": len(records) - graded,
        "truncated": sum(r.finish_reason == "length" for r in records),
        "problems": len(index),
    }
