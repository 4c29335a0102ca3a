"""Synced metrics pair up by position: every rank must log the same keys. A metric that
exists on one rank only (an error kind, judge latencies where a rank made calls) is
logged as 0 on the others instead of shifting every later metric."""
import torch
import torch.distributed as dist

from qed_lightning.modules.collective_steps import same_keys_on_every_rank

from .spawn import run_on_ranks

PER_RANK = [
    {"reward/mean": 0.5, "judge/errors/timeout": 2.0},
    {"reward/mean": 0.25, "judge/latency_p50": 1.5, "judge/errors/no_verdict": 1.0},
]


def _check(rank, world):
    metrics = same_keys_on_every_rank(PER_RANK[rank])
    assert list(metrics) == ["judge/errors/no_verdict", "judge/errors/timeout", "judge/latency_p50", "reward/mean"]
    summed = torch.tensor(list(metrics.values()), dtype=torch.float64)
    dist.all_reduce(summed)
    assert summed.tolist() == [1.0, 2.0, 1.5, 0.75]  # each key summed with its own kind


def test_ranks_with_different_metrics_log_the_same_keys():
    run_on_ranks(_check, 2)
