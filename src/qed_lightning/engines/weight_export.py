"""Weights written to a shared filesystem for a served engine to reload.

One directory per weight version (``<root>/v000012/model.safetensors``), written
under a temporary name and renamed into place, so a server never reads a half-written
version; older versions are deleted once a newer one is loaded (``keep`` of them stay).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import torch

from qed_lightning.engines.weights import check_complete

__all__ = ["write_weight_version", "prune_weight_versions", "version_dir"]


def version_dir(root: str | os.PathLike, version: int) -> Path:
    return Path(root) / f"v{version:06d}"


def write_weight_version(named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                         root: str | os.PathLike, version: int, expected: set[str] | None = None) -> Path:
    """Writes one version's tensors (on CPU, contiguous; tied tensors stored once per
    name, since safetensors refuses shared storage) and returns its directory."""
    from safetensors.torch import save_file

    items = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
    tensors, seen = {}, set()
    for name, tensor in items:
        t = tensor.detach().to("cpu")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        # a tensor whose storage was already stored under another name is copied
        tensors[name] = t.clone().contiguous() if key in seen else t.contiguous()
        seen.add(key)
    if expected is not None:
        check_complete(tensors.keys(), expected)
    final = version_dir(root, version)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "qed_weight_version": str(version)})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def prune_weight_versions(root: str | os.PathLike, keep_from: int) -> None:
    """Deletes version directories older than ``keep_from``."""
    for path in Path(root).glob("v[0-9]*"):
        name = path.name.split(".")[0]
        if name[1:].isdigit() and int(name[1:]) < keep_from:
            shutil.rmtree(path, ignore_errors=True)
