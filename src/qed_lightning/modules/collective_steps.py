"""Micro-batch accumulation that keeps ranks in step.

Ranks pack different numbers of micro-batches (sequence lengths differ), but under
FSDP every forward is a collective and under DDP every synced backward is one: a rank
that runs one micro-batch fewer than another hangs the job. So every rank runs the
same count, padding with zero-loss passes through the whole model, and DDP syncs the
gradients once, with the last micro-batch, instead of after every one.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn

__all__ = ["backward_sync", "clip_grad_norm", "micro_batch_count", "push_from_rank_zero", "same_keys_on_every_rank",
           "zero_loss"]


def micro_batch_count(strategy, local: int, world_size: int, device) -> int:
    """The largest micro-batch count of any rank (``local`` on one process)."""
    if world_size == 1:
        return local
    return int(strategy.reduce(torch.tensor(local, device=device), reduce_op="max"))


@contextmanager
def backward_sync(strategy, enabled: bool):
    """DDP: no gradient all-reduce in the backward run inside unless ``enabled``; the
    gradients accumulate locally and go out with the next synced backward."""
    if enabled or strategy is None or not hasattr(strategy, "block_backward_sync"):
        yield
    else:
        with strategy.block_backward_sync():
            yield


def zero_loss(model: nn.Module, token_id: int = 0) -> torch.Tensor:
    """A pass through the whole causal LM on one token whose loss is 0: the rank takes
    part in the step's collectives and adds nothing to the gradients. Call it inside
    the forward of the module FSDP wraps as its root (the LM head's weight is used)."""
    head = model.get_output_embeddings().weight
    ids = torch.full((1, 1), token_id, dtype=torch.long, device=head.device)
    hidden = model.base_model(input_ids=ids).last_hidden_state  # [1, 1, H]
    return (hidden[0] @ head.T).sum() * 0.0  # scalar


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clips the global gradient norm and returns it (a plain tensor: under FSDP2 the
    gradients are DTensors and so is their norm, which is reduced over the shards)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class WeightPushError(RuntimeError):
    pass


def push_from_rank_zero(weights: Iterable, push: Callable[[Iterable], None], is_rank_zero: bool,
                        any_rank: Callable[[bool], bool]) -> None:
    """Rank 0 pushes ``weights`` (into an engine all ranks share); the others only walk
    them, because producing them may take collectives (FSDP gathers). If rank 0's push
    fails, it still walks the rest so those collectives stay matched, and then every
    rank raises, instead of the others waiting at a barrier until a timeout.
    ``any_rank(flag)``: whether any rank's flag is set (a collective)."""
    error: BaseException | None = None
    if is_rank_zero:
        try:
            push(weights)
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            error = err
    if iter(weights) is weights:  # a stream (FSDP gathers): walk what rank 0 did not consume
        for _ in weights:
            pass
    if any_rank(error is not None):
        if error is not None:
            raise error
        raise WeightPushError("rank 0 failed to push the weights to the shared engine (see its error)")


def same_keys_on_every_rank(metrics: dict[str, float]) -> dict[str, float]:
    """Some metrics exist only where they happened (an error kind, judge latencies
    when a rank made calls): every rank must log the same keys in the same order, or
    the synced reductions pair up different metrics and a rank waits forever. A key
    missing on a rank counts 0 there. A collective (object all-gather)."""
    import torch.distributed as dist

    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(metrics))
    keys = sorted(set().union(*gathered))
    return {k: float(metrics.get(k, 0.0)) for k in keys}
