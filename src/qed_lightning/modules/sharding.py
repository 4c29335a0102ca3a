"""FSDP2 for the policy under Lightning's ``ModelParallelStrategy``.

With ``--trainer.strategy=ModelParallelStrategy`` (``data_parallel_size`` = the number
of ranks, ``tensor_parallel_size=1``) Lightning hands the module a device mesh and
expects ``configure_model`` to shard. Every decoder layer becomes its own FSDP unit
and the model the root unit, so a forward gathers one layer at a time and a weight
push can gather the full weights layer by layer (``engines/full_weights.py``).
Without a mesh (single process, DDP) the model is left as it is.

Under ``trainer.precision: bf16-mixed`` the parameters are the fp32 master and Lightning
computes under autocast; each unit then gets FSDP2's ``MixedPrecisionPolicy``: the
all-gathers move bf16 (half the traffic and half the gathered layer's memory), the
forward and backward run on the bf16 copy, and the gradients are reduce-scattered and
accumulated in fp32 into the fp32 shards the optimizer steps.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MIXED_PRECISION", "RootForward", "mixed_precision_policy", "shard_model"]

# trainer.precision -> (dtype the units gather and compute in, dtype gradients reduce in).
# Other precisions shard without a policy: the units gather and compute in the
# parameters' own dtype (a bf16-true model gathers bf16, a 32-true one fp32).
MIXED_PRECISION: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "bf16-mixed": (torch.bfloat16, torch.float32),
}


def mixed_precision_policy(precision: str | None):
    """FSDP2's ``MixedPrecisionPolicy`` for a Lightning precision string, or None."""
    if precision not in MIXED_PRECISION:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    param_dtype, reduce_dtype = MIXED_PRECISION[precision]
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)


def _data_parallel_mesh(mesh):
    if mesh is None:
        return None
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise NotImplementedError("tensor parallelism is not implemented: use tensor_parallel_size=1")
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def shard_model(model: nn.Module, mesh, root: nn.Module | None = None, reshard_after_forward: bool = True,
                precision: str | None = None) -> nn.Module:
    """``fully_shard`` each decoder layer of ``model``, then ``root`` (default: the
    model) over the mesh's data-parallel dimension, with the mixed-precision policy of
    ``precision`` (the trainer's precision string, see ``MIXED_PRECISION``). Returns ``model``.

    The root unit's parameters (embeddings, final norm, the tied LM head) are gathered
    only for the duration of the root's ``forward``. The losses use the LM head's weight
    outside the HF model's own forward, so the root must be a module whose forward
    contains the whole loss (``CausalLMWithLoss``, ``PolicyLoss``), not the HF model."""
    dp_mesh = _data_parallel_mesh(mesh)
    if dp_mesh is None:
        return model
    from torch.distributed.fsdp import fully_shard

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise NotImplementedError(f"{type(model).__name__}: no model.layers to shard layer by layer")
    kwargs = dict(mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    policy = mixed_precision_policy(precision)
    if policy is not None:
        kwargs["mp_policy"] = policy
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(root if root is not None else model, **kwargs)
    return model


class RootForward(nn.Module):
    """Runs ``fn(policy, ...)`` inside this module's ``forward``.

    As FSDP2's root unit it gathers the parameters outside the decoder layers
    (embeddings, final norm, the tied LM head) for exactly the duration of the call, so
    a loss that uses the head's weight outside the HF model's forward sees it whole.
    Unsharded, it is a plain call."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, fn, *args, **kwargs):
        return fn(self.policy, *args, **kwargs)
