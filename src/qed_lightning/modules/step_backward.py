"""Backward over one RL step's micro-batches, and the step's sums over ranks.

Every rank runs the same number of backward passes (``collective_steps``), a rank with
fewer micro-batches running zero losses, so DDP's and FSDP's collectives stay matched;
gradients are synchronised on the last pass only.
"""
from __future__ import annotations

import torch

from qed_lightning.losses.policy import StepNorms
from qed_lightning.modules.collective_steps import backward_sync, micro_batch_count, zero_loss

__all__ = ["accumulate_micro_batches", "empty_totals", "reduce_totals"]

_SUMMED_METRICS = ("token_count", "clip_count", "entropy_sum", "ratio_sum", "kl_sum")
_MAXIMA = ("gap_max", "is_max")


def empty_totals() -> dict[str, float]:
    """The step's sums, before its first micro-batch."""
    return {"loss": 0.0, **{k: 0.0 for k in _SUMMED_METRICS}, "gap_sum": 0.0, "gap_max": 0.0, "is_sum": 0.0,
            "is_sq_sum": 0.0, "is_max": 0.0}


def accumulate_micro_batches(module, micro_batches: list, norms: StepNorms, totals: dict) -> None:
    """Backward every micro-batch of the step through ``module`` (a ``GRPOModule``),
    adding their sums into ``totals``: the loss, the loss's metrics, the log-prob gap
    and the untruncated importance weights pi_trainer / pi_engine."""
    strategy = module.trainer.strategy
    count = micro_batch_count(strategy, len(micro_batches), module.trainer.world_size, module.device)
    for i in range(count):
        with backward_sync(strategy, enabled=i == count - 1):
            if i >= len(micro_batches):
                module.manual_backward(module._policy_root(zero_loss, module.producer.pad_id))
                continue
            loss, metrics, diff = module._micro_loss(micro_batches[i], norms)
            module.manual_backward(loss)
        totals["loss"] += float(loss.detach())
        for k in _SUMMED_METRICS:
            totals[k] += float(metrics[k])
        gap, weight = diff.abs(), diff.double().exp()  # [M]: |log-prob gap|, pi_trainer / pi_engine
        totals["gap_sum"] += float(gap.sum())
        totals["gap_max"] = max(totals["gap_max"], float(gap.max()) if gap.numel() else 0.0)
        totals["is_sum"] += float(weight.sum())
        totals["is_sq_sum"] += float((weight * weight).sum())
        totals["is_max"] = max(totals["is_max"], float(weight.max()) if weight.numel() else 0.0)


def reduce_totals(totals: dict, world: int, sum_tensor, max_over_ranks) -> dict:
    """The step's sums over all ranks; ``loss`` becomes the step's objective (each
    rank's loss carries the world-size factor DDP's averaging takes out).
    ``sum_tensor(t)``: a sum over ranks; ``max_over_ranks(x)``: a max over ranks."""
    if world == 1:
        return totals
    keys = [k for k in totals if k not in _MAXIMA]
    summed = sum_tensor(torch.tensor([totals[k] for k in keys], dtype=torch.float64))
    out = dict(zip(keys, summed.tolist()))
    out["loss"] /= world
    for key in _MAXIMA:
        out[key] = max_over_ranks(totals[key])
    return out
