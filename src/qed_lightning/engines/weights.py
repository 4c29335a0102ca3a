"""Checks and helpers for pushing a trainer's weights into an engine.

A push must be complete: vLLM's in-place reload only *warns* about parameters it did
not receive, and an engine left with stale tensors keeps generating from a model the
trainer no longer has. So the names an engine expects are read once from the model's
checkpoint files, and every push is checked against them before anything is sent.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch

__all__ = ["IncompleteWeightsError", "checkpoint_tensor_names", "check_complete", "tensor_bytes"]


class IncompleteWeightsError(ValueError):
    """A weight push that would leave some engine parameters stale."""


def checkpoint_tensor_names(model_dir: str | Path) -> set[str]:
    """Tensor names stored in a Hugging Face model directory's safetensors files."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    names: set[str] = set()
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            names.update(f.keys())
    if not names:
        raise FileNotFoundError(f"no safetensors weights in {model_dir}")
    return names


def check_complete(names: Iterable[str], expected: set[str]) -> None:
    """Raises :class:`IncompleteWeightsError` naming the parameters a push lacks."""
    missing = expected - set(names)
    if missing:
        shown = sorted(missing)[:8]
        raise IncompleteWeightsError(
            f"weight push is missing {len(missing)} of the engine's {len(expected)} tensors "
            f"(e.g. {shown}); send the full state dict (tied embeddings included)"
        )


def tensor_bytes(named: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the distinct tensors (a tied embedding and LM head count once)."""
    seen, total = set(), 0
    for t in named.values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def iter_named(named: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    # detach: the engine copies values, and a tensor that still requires grad would
    # make that copy part of the trainer's autograd graph
    for name, tensor in named.items():
        yield name, tensor.detach()
