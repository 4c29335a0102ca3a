"""Full (unsharded) weights of a policy, one layer at a time, for a weight push.

The colocated engine on every rank needs the *full* weights after each step. Under
FSDP each rank holds a shard; gathering the whole state dict at once would put a
second full copy of the model on every rank. These generators gather one FSDP unit
(FSDP1: ``summon_full_params(unit, recurse=False)``) or one parameter (FSDP2:
``DTensor.full_tensor()``) at a time, yield its tensors, and free them before the
next, so the extra memory is one layer, not one model. Plain and DDP-wrapped modules
are yielded as they are.

Every rank must consume the generator to the end (the gathers are collectives),
even a rank whose engine ignores the tensors.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

__all__ = ["clean_name", "full_weights_for_push", "is_sharded", "iter_full_weights"]

# Wrapper prefixes that FSDP1, activation checkpointing and torch.compile add to names.
_WRAPPER_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def clean_name(name: str) -> str:
    """``a._fsdp_wrapped_module.b`` -> ``a.b``: the name the checkpoint uses."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def _is_fsdp1(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(module, FullyShardedDataParallel)


# The decorator form (not a ``with`` inside the body) matters for a generator: torch
# enters no_grad only while the generator's own code runs and restores the caller's
# mode at every yield, so the consumer between items keeps its own grad mode. No
# gather for a push needs autograd: under no_grad ``full_tensor()`` records no graph.
@torch.no_grad()
def iter_full_weights(module: nn.Module, include_buffers: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields ``(checkpoint name, full tensor)`` for every parameter (and persistent
    buffer) of ``module``. A tied parameter (one object under several names, e.g.
    ``lm_head.weight`` and ``model.embed_tokens.weight``) is gathered once and yielded
    under each of its names in a row, all sharing that one tensor: engines check a
    push against every state-dict/checkpoint name (HF's strict load needs the LM
    head's name; vLLM skips it for tied models itself), so the names stay, but the
    gather is not repeated and the gathered tensor is not held past its names.

    The tensors are valid until the next distinct tensor is requested (FSDP1
    reshards a unit when the generator moves on): consumers copy them, as an
    engine's load does.
    """
    if any(_is_fsdp1(m) for m in module.modules()):
        # one gather per FSDP1 unit: a tied parameter lives in one unit (FSDP1 puts
        # shared parameters in their common ancestor's unit), so its names are all
        # yielded from that unit's single summon
        yield from _iter_fsdp1(module, prefix="", seen=set())
    else:
        for names, tensor in _group_tied(_named_tensors(module, include_buffers)):
            if _is_dtensor(tensor):  # FSDP2: gather this parameter alone, once for all its names
                tensor = tensor.full_tensor()
            tensor = tensor.detach()
            for name in names:
                yield clean_name(name), tensor
            del tensor  # drop the gathered copy before the next gather
    # buffers of FSDP1 modules are never sharded: _iter_fsdp1 yields them as they are


def _group_tied(named: Iterator[tuple[str, torch.Tensor]]) -> list[tuple[list[str], torch.Tensor]]:
    """``[(names, tensor)]`` with every name of one tensor object together, in order
    of first appearance. Cheap: it only walks the module, nothing is gathered."""
    groups: dict[int, tuple[list[str], torch.Tensor]] = {}
    for name, tensor in named:
        groups.setdefault(id(tensor), ([], tensor))[0].append(name)
    return list(groups.values())


def _named_tensors(module: nn.Module, include_buffers: bool, recurse: bool = True):
    yield from module.named_parameters(remove_duplicate=False, recurse=recurse)
    if include_buffers:
        persistent = _persistent_buffer_names(module) if recurse else None
        for name, buf in module.named_buffers(remove_duplicate=False, recurse=recurse):
            if persistent is None or name in persistent:
                yield name, buf


def _persistent_buffer_names(module: nn.Module) -> set[str]:
    names = set()
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for buf_name in mod._buffers:
            if buf_name not in mod._non_persistent_buffers_set:
                names.add(f"{mod_name}.{buf_name}" if mod_name else buf_name)
    return names


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(tensor, DTensor)


def _iter_fsdp1(module: nn.Module, prefix: str, seen: set[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Depth-first over FSDP1 units: a unit's own parameters are gathered with
    ``recurse=False`` (its children stay sharded), then each child is visited."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if _is_fsdp1(module):
        with FSDP.summon_full_params(module, recurse=False, writeback=False):
            for name, tensor in _own_tensors(module):
                full = clean_name(prefix + name)
                if full not in seen:
                    seen.add(full)
                    yield full, tensor.detach()
    else:
        for name, tensor in _own_tensors(module):
            full = clean_name(prefix + name)
            if full not in seen:
                seen.add(full)
                yield full, tensor.detach()
    for child_name, child in module.named_children():
        yield from _iter_fsdp1(child, f"{prefix}{child_name}.", seen)


def _own_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters and persistent buffers reachable without entering a nested FSDP unit
    (those are yielded when the walk reaches them, under their own gather)."""
    stack = [("", module)]
    while stack:
        prefix, mod = stack.pop()
        for name, p in mod._parameters.items():
            if p is not None and not name.startswith("_flat_param"):
                yield prefix + name, p
        for name, b in mod._buffers.items():
            if b is not None and name not in mod._non_persistent_buffers_set:
                yield prefix + name, b
        for child_name, child in mod._modules.items():
            if child is not None and not _is_fsdp1(child):
                stack.append((f"{prefix}{child_name}.", child))


def is_sharded(module: nn.Module) -> bool:
    """True under FSDP1 (wrapped units) or FSDP2 (DTensor parameters)."""
    return any(_is_fsdp1(m) for m in module.modules()) or any(_is_dtensor(p) for p in module.parameters())


def full_weights_for_push(module: nn.Module):
    """The state dict itself for an unsharded module (a mapping: engines check it is
    complete before sending anything), else the layer-by-layer stream."""
    return iter_full_weights(module) if is_sharded(module) else module.state_dict()
