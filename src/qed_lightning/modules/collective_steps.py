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

__all__ = ["backward_sync", "check_step_strategy", "clip_grad_norm", "micro_batch_count", "push_from_rank_zero",
           "same_keys_on_every_rank", "zero_loss"]


def micro_batch_count(strategy, local: int, world_size: int, device) -> int:
    """The largest micro-batch count of any rank (``local`` on one process)."""
    if world_size == 1:
        return local
    return int(strategy.reduce(torch.tensor(local, device=device), reduce_op="max"))


@contextmanager
def backward_sync(strategy, enabled: bool):
    """DDP: no gradient all-reduce in the backward run inside unless ``enabled``; the
    gradients accumulate locally and go out with the next synced backward.

    Only a torch ``DistributedDataParallel`` model: Lightning's ``block_backward_sync``
    enters the ``no_sync`` of any model that has one (FSDP1's would hold unsharded
    gradients, DeepSpeed's refuses under ZeRO-2/3). FSDP2 reduces every backward."""
    from torch.nn.parallel import DistributedDataParallel

    if enabled or strategy is None or not isinstance(getattr(strategy, "model", None), DistributedDataParallel):
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


def clip_grad_norm(model: nn.Module, max_norm: float, strategy=None) -> torch.Tensor:
    """Clips the norm of the whole model's gradient, over every rank's shard, and
    returns that pre-clip norm: a plain tensor, equal on every rank.

    - one process, DDP (gradients already all-reduced): ``clip_grad_norm_`` as it is;
    - FSDP2 (DTensor gradients): ``clip_grad_norm_`` reduces the per-shard norms, and
      scales every shard by the one global factor; the norm (a DTensor) is returned plain;
    - FSDP1 (``model`` is the root ``FullyShardedDataParallel``): its own
      ``clip_grad_norm_``. ``torch.nn.utils.clip_grad_norm_`` on its parameters would
      see only this rank's shard: each rank would clip by its own factor;
    - DeepSpeed is refused (see :func:`check_step_strategy`).
    """
    check_step_strategy(strategy)
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(model, FullyShardedDataParallel):
        return model.clip_grad_norm_(max_norm)
    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} holds FSDP1 units but is not their root: clip the gradient "
                         "through the root FullyShardedDataParallel (a clip of the parameters sees one shard)")
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def check_step_strategy(strategy) -> None:
    """Refuses the Lightning strategies under which a step of these modules (manual
    optimization: several backward passes, then this clip and ``opt.step()``) is wrong.

    - ``FSDPStrategy`` (FSDP1) wraps the whole LightningModule in one unit (neither
      module wraps its own) and runs ``training_step`` inside that unit's forward,
      where FSDP1 cannot run a backward (it fails at the first one); one unit would
      also gather the whole model for the whole step.
    - ``DeepSpeedStrategy`` clips inside the engine's ``step`` by the DeepSpeed config's
      ``gradient_clipping`` (Lightning fills it from ``trainer.gradient_clip_val``), and
      ZeRO keeps the gradients in its own partitions: a clip of the parameters sees
      none of them, and the step's norm is known only after the engine's step.
    """
    if strategy is None:
        return
    from lightning.pytorch.strategies import DeepSpeedStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(getattr(strategy, "model", None), FullyShardedDataParallel):
        raise NotImplementedError(
            "trainer.strategy FSDPStrategy (FSDP1) is not supported: it runs training_step inside the forward of one "
            "FSDP unit around the whole module, where FSDP1 cannot run the step's backward passes. Use FSDP2: "
            "lightning.pytorch.strategies.ModelParallelStrategy with data_parallel_size=<GPUs> and "
            "tensor_parallel_size=1")
    if isinstance(strategy, DeepSpeedStrategy):
        raise NotImplementedError(
            "trainer.strategy DeepSpeedStrategy is not supported: DeepSpeed clips inside its engine's step by its "
            "config's gradient_clipping and keeps ZeRO's gradients out of the parameters, so model.max_grad_norm "
            "cannot be applied or measured here. Use FSDP2 (lightning.pytorch.strategies.ModelParallelStrategy) or ddp")


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
