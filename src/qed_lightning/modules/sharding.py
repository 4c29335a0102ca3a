"""FSDP2 for the policy under Lightning's ``ModelParallelStrategy``.

With ``--trainer.strategy=ModelParallelStrategy`` (``data_parallel_size`` = the number
of ranks, ``tensor_parallel_size=1``) Lightning hands the module a device mesh and
expects ``configure_model`` to shard. Every decoder layer becomes its own FSDP unit
and the model the root unit, so a forward gathers one layer at a time and a weight
push can gather the full weights layer by layer (``engines/full_weights.py``).
Without a mesh (single process, DDP) the model is left as it is.
"""
from __future__ import annotations

from torch import nn

__all__ = ["shard_model"]


def _data_parallel_mesh(mesh):
    if mesh is None:
        return None
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise NotImplementedError("tensor parallelism is not implemented: use tensor_parallel_size=1")
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def shard_model(model: nn.Module, mesh, reshard_after_forward: bool = True) -> nn.Module:
    """``fully_shard`` each decoder layer, then the whole model, over the mesh's
    data-parallel dimension. Returns ``model`` (sharded in place)."""
    dp_mesh = _data_parallel_mesh(mesh)
    if dp_mesh is None:
        return model
    from torch.distributed.fsdp import fully_shard

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise NotImplementedError(f"{type(model).__name__}: no model.layers to shard layer by layer")
    for layer in layers:
        fully_shard(layer, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    return model
