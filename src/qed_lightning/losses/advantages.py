"""Advantages from group rewards: pure functions, one registry.

Every function takes ``rewards`` [N], ``group_ids`` [N] (samples of one prompt share
an id) and ``valid`` [N] (False for samples left out of the baselines, e.g. failed
gradings under ``on_failure: mask``) and returns advantages [N] in the rewards' dtype
(0 where not valid), computed in float64 and exactly 0 for every sample of a group
whose valid rewards are all equal.
A keyword ``reduce`` sums a tensor over ranks (identity on one process): groups never
span ranks, so only batch-level statistics use it.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["ADVANTAGES", "AdvantageFn", "get_advantage", "training_mask", "zero_advantage_groups"]

AdvantageFn = Callable[..., torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]
EPS = 1e-6


def _no_reduce(t: torch.Tensor) -> torch.Tensor:
    return t


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor):
    """Per-sample group mean, group std (population), group size over valid samples, and
    whether the sample's valid group rewards are all equal; all float64 (``equal`` bool).

    An all-equal group must get advantages of exactly 0, which a computed mean does not
    guarantee: the float32 mean of 16 rewards of 3/7 is not 3/7 (advantages ~1e-7, +-0.15
    after a std normalisation, and ``zero_advantage_groups`` misses the group), nor is the
    float64 mean of three rewards of 0.1. ``equal`` makes it exact for any dtype and group
    size; float64 keeps the other groups' statistics precise.
    """
    g = int(group_ids.max()) + 1 if group_ids.numel() else 0
    r = rewards.double()  # [N]
    w = valid.double()  # [N]
    zeros = r.new_zeros(g)  # [G]
    count = zeros.index_add(0, group_ids, w)  # [G]
    total = zeros.index_add(0, group_ids, r * w)  # [G]
    mean = total / count.clamp_min(1)  # [G]
    sq = zeros.index_add(0, group_ids, (r - mean[group_ids]) ** 2 * w)  # [G]
    std = (sq / count.clamp_min(1)).sqrt()  # [G]
    inf = r.new_full((g,), float("inf"))  # [G]
    low = inf.scatter_reduce(0, group_ids, torch.where(valid, r, float("inf")), "amin")  # [G]
    high = (-inf).scatter_reduce(0, group_ids, torch.where(valid, r, float("-inf")), "amax")  # [G]
    equal = ~(low < high)  # [G]: no two different valid rewards (also no valid reward at all)
    return mean[group_ids], std[group_ids], count[group_ids], equal[group_ids]  # each [N]


def _advantage(rewards: torch.Tensor, valid: torch.Tensor, equal: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """[N] ``value`` (float64) in the rewards' dtype; exactly 0 where not valid or the group's rewards are equal."""
    return torch.where(valid & ~equal, value, 0.0).to(rewards.dtype)


def group_mean(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
               reduce: Reduce = _no_reduce) -> torch.Tensor:
    """A = R - mean of the group (QED-Nano: no division by the std)."""
    mean, _, _, equal = _group_stats(rewards, group_ids, valid)
    return _advantage(rewards, valid, equal, rewards.double() - mean)


def group_std(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
              reduce: Reduce = _no_reduce) -> torch.Tensor:
    """A = (R - group mean) / (group std + eps) (the original GRPO)."""
    mean, std, _, equal = _group_stats(rewards, group_ids, valid)
    return _advantage(rewards, valid, equal, (rewards.double() - mean) / (std + EPS))


def batch_std(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
              reduce: Reduce = _no_reduce) -> torch.Tensor:
    """A = (R - group mean) / (std of the whole step's valid rewards, all ranks + eps)."""
    mean, _, _, equal = _group_stats(rewards, group_ids, valid)
    r = rewards[valid].double()  # [V]; double: the moments are summed over ranks
    count, total, sq = reduce(torch.stack([r.new_tensor(float(r.numel())), r.sum(), (r * r).sum()]))  # [3]
    var = (sq / count.clamp_min(1) - (total / count.clamp_min(1)) ** 2).clamp_min(0)
    return _advantage(rewards, valid, equal, (rewards.double() - mean) / (var.sqrt() + EPS))


def rloo(rewards: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor,
         reduce: Reduce = _no_reduce) -> torch.Tensor:
    """Leave-one-out: A_i = R_i - mean of the *other* valid samples of the group
    = G / (G - 1) * (R_i - group mean); 0 for a group of one."""
    mean, _, count, equal = _group_stats(rewards, group_ids, valid)
    scale = torch.where(count > 1, count / (count - 1).clamp_min(1), 0.0)  # [N]
    return _advantage(rewards, valid, equal, scale * (rewards.double() - mean))


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


def training_mask(valid: torch.Tensor, truncated: torch.Tensor, advantages: torch.Tensor, group_ids: torch.Tensor,
                  overlong_filtering: bool, filter_zero_advantage_groups: bool) -> torch.Tensor:
    """[N] bool: the samples the policy update trains on.

    Args:
        valid: [N] samples with a reward (failed gradings under ``on_failure: mask`` are not).
        truncated: [N] completions that hit max_tokens without EOS.
        advantages: [N] the step's advantages.
        group_ids: [N] one id per prompt.
        overlong_filtering: Leave out truncated completions.
        filter_zero_advantage_groups: Leave out every sample of a group whose advantages are all 0.
    """
    keep = valid.clone()  # [N]
    if overlong_filtering:
        keep &= ~truncated
    if filter_zero_advantage_groups:
        keep &= ~zero_advantage_groups(advantages, group_ids)
    return keep
