"""Advantages from group rewards: pure functions, one registry.

Every function takes ``rewards`` [N], ``group_ids`` [N] (samples of one prompt share
an id) and ``valid`` [N] (False for samples left out of the baselines, e.g. failed
gradings under ``on_failure: mask``) and returns advantages [N] (0 where not valid).
A keyword ``reduce`` sums a tensor over ranks (identity on one process): groups never
span ranks, so only batch-level statistics use it.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["ADVANTAGES", "AdvantageFn", "get_advantage", "zero_advantage_groups"]

AdvantageFn = Callable[..., torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]
EPS = 1e-6


def _no_reduce(t: torch.Tensor) -> torch.Tensor:
    return t


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor):
    """Per-sample group mean, group std (population) and group size over valid samples."""
    g = int(group_ids.max()) + 1 if group_ids.numel() else 0
    w = valid.to(rewards.dtype)  # [N]
    count = torch.zeros(g, dtype=rewards.dtype).index_add_(0, group_ids, w)  # [G]
    total = torch.zeros(g, dtype=rewards.dtype).index_add_(0, group_ids, rewards * w)  # [G]
    mean = total / count.clamp_min(1)  # [G]
    sq = torch.zeros(g, dtype=rewards.dtype).index_add_(0, group_ids, (rewards - mean[group_ids]) ** 2 * w)
    std = (sq / count.clamp_min(1)).sqrt()  # [G]
    return mean[group_ids], std[group_ids], count[group_ids]  # each [N]


def group_mean(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
               reduce: Reduce = _no_reduce) -> torch.Tensor:
    """A = R - mean of the group (QED-Nano: no division by the std)."""
    mean, _, _ = _group_stats(rewards, group_ids, valid)
    return torch.where(valid, rewards - mean, 0.0)


def group_std(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
              reduce: Reduce = _no_reduce) -> torch.Tensor:
    """A = (R - group mean) / (group std + eps) (the original GRPO)."""
    mean, std, _ = _group_stats(rewards, group_ids, valid)
    return torch.where(valid, (rewards - mean) / (std + EPS), 0.0)


def batch_std(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
              reduce: Reduce = _no_reduce) -> torch.Tensor:
    """A = (R - group mean) / (std of the whole step's valid rewards, all ranks + eps)."""
    mean, _, _ = _group_stats(rewards, group_ids, valid)
    r = rewards[valid].double()  # [V]; double: the moments are summed over ranks
    count, total, sq = reduce(torch.stack([r.new_tensor(float(r.numel())), r.sum(), (r * r).sum()]))  # [3]
    var = (sq / count.clamp_min(1) - (total / count.clamp_min(1)) ** 2).clamp_min(0)
    std = var.sqrt().to(rewards.dtype)
    return torch.where(valid, (rewards - mean) / (std + EPS), 0.0)


def rloo(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
         reduce: Reduce = _no_reduce) -> torch.Tensor:
    """Leave-one-out: A_i = R_i - mean of the *other* valid samples of the group
    = G / (G - 1) * (R_i - group mean); 0 for a group of one."""
    mean, _, count = _group_stats(rewards, group_ids, valid)
    scale = torch.where(count > 1, count / (count - 1).clamp_min(1), 0.0)
    return torch.where(valid, scale * (rewards - mean), 0.0)


ADVANTAGES: dict[str, AdvantageFn] = {
    "group_mean": group_mean, "group_std": group_std, "batch_std": batch_std, "rloo": rloo,
}


def get_advantage(name: str) -> AdvantageFn:
    try:
        return ADVANTAGES[name]
    except KeyError:
        raise ValueError(f"unknown advantage {name!r}; valid: {sorted(ADVANTAGES)}") from None


def zero_advantage_groups(advantages: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[N] bool: samples whose whole group has zero advantage (all rewards equal)."""
    g = int(group_ids.max()) + 1
    nonzero = torch.zeros(g, dtype=torch.long).index_add_(0, group_ids, (advantages != 0).long())
    return nonzero[group_ids] == 0
