"""The gradient clip under sharding (2 gloo ranks on CPU): the norm it returns is the
norm of the whole, unsharded gradient on every rank, and every rank scales its shard
by the same factor, so the clipped gradient equals the unsharded gradient clipped.
A clip of the parameters under FSDP1 would see one shard per rank (different norms,
different factors). The reference is the unsharded model run on every rank's batch,
its gradients averaged over ranks as FSDP's reduce-scatter does."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from qed_lightning.engines.full_weights import clean_name
from qed_lightning.modules.collective_steps import check_step_strategy, clip_grad_norm

from .spawn import run_on_ranks
from .test_full_weights import _model


def _batch(rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own tokens
    return torch.randint(0, 128, (2, 12), generator=generator)  # [B, T]


def _reference(world: int) -> tuple[dict[str, torch.Tensor], float]:
    """Gradients of the unsharded model averaged over the ranks' batches, and their norm."""
    model = _model()
    for rank in range(world):
        (model(_batch(rank), labels=_batch(rank)).loss / world).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return grads, math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))


def _check(rank: int, norm: torch.Tensor, reference_norm: float, world: int) -> None:
    norms = [None] * world
    dist.all_gather_object(norms, float(norm))
    assert norms[0] == norms[1], norms  # the same norm on every rank
    assert not isinstance(norm, DTensor)
    torch.testing.assert_close(float(norm), reference_norm, rtol=1e-5, atol=0)


def _check_clipped(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], factor: float) -> None:
    assert set(grads) == set(reference), sorted(set(grads) ^ set(reference))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference[name] * factor, rtol=1e-4, atol=1e-7, msg=name)


def _fsdp1(rank: int, world: int, use_orig_params: bool) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    reference, reference_norm = _reference(world)
    max_norm = 0.5 * reference_norm  # the clip acts
    wrapped = FSDP(_model(), auto_wrap_policy=ModuleWrapPolicy({Qwen3DecoderLayer}), use_orig_params=use_orig_params,
                   device_id=torch.device("cpu"))
    wrapped(_batch(rank), labels=_batch(rank)).loss.backward()
    _check(rank, clip_grad_norm(wrapped, max_norm), reference_norm, world)
    # the clipped gradient: its global norm is max_norm (a clip by each rank's own
    # factor would leave sqrt(ranks) * max_norm) ...
    _check(rank, clip_grad_norm(wrapped, float("inf")), max_norm, world)
    if use_orig_params:  # ... and it is the reference, scaled (full gradients need original parameters)
        with FSDP.summon_full_params(wrapped, with_grads=True):
            grads = {clean_name(n): p.grad.clone() for n, p in wrapped.named_parameters()}
        _check_clipped(grads, reference, max_norm / (reference_norm + 1e-6))
    with pytest.raises(ValueError, match="not their root"):  # the units' holder, not the root
        clip_grad_norm(wrapped.module, max_norm)


def _fsdp2(rank: int, world: int) -> None:
    from torch.distributed.fsdp import fully_shard

    reference, reference_norm = _reference(world)
    max_norm = 0.5 * reference_norm
    model = _model()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    model(_batch(rank), labels=_batch(rank)).loss.backward()
    local = dict(model.named_parameters())["model.layers.0.mlp.up_proj.weight"].grad
    assert local.to_local().numel() < local.numel()  # the gradients are sharded
    _check(rank, clip_grad_norm(model, max_norm), reference_norm, world)
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
    _check_clipped(grads, reference, max_norm / (reference_norm + 1e-6))


def _every_sharding(rank: int, world: int) -> None:
    _fsdp1(rank, world, use_orig_params=True)
    _fsdp1(rank, world, use_orig_params=False)
    _fsdp2(rank, world)


def test_clip_uses_the_global_norm_under_fsdp1_and_fsdp2():
    """One pair of processes for the three shardings (starting ranks is the slow part)."""
    run_on_ranks(_every_sharding, 2)


def test_strategies_whose_step_cannot_clip_are_refused():
    """Lightning's FSDPStrategy around the whole module (the step's backward runs inside
    its forward) and DeepSpeed (clips inside its engine, gradients in ZeRO's partitions)."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DeepSpeedStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    fsdp1 = SimpleNamespace(model=FSDP.__new__(FSDP))  # what Lightning's FSDPStrategy holds
    with pytest.raises(NotImplementedError, match="ModelParallelStrategy"):
        check_step_strategy(fsdp1)
    deepspeed = DeepSpeedStrategy.__new__(DeepSpeedStrategy)  # the class only: deepspeed need not be installed
    with pytest.raises(NotImplementedError, match="gradient_clipping"):
        clip_grad_norm(_model(), 1.0, deepspeed)
    check_step_strategy(SimpleNamespace(model=_model()))  # ddp / FSDP2 hold the module itself: accepted
