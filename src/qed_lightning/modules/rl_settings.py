"""Grouped settings of the RL module (each a dataclass, so a YAML config nests them)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qed_lightning.contracts import SamplingSettings

__all__ = ["EngineSettings", "RecordSettings"]


@dataclass
class EngineSettings:
    """The rollout engine.

    Args:
        backend: ``vllm`` (colocated ``VLLMEngine``, one per rank), ``hf`` (``HFEngine``: no
            vLLM, slow) or ``served`` (``ServedEngine``: ``vllm serve`` processes elsewhere,
            weights pushed through ``weights_dir``).
        dtype: Engine weights dtype; None uses the policy's (keep them equal when the
            trainer/engine log-prob gap matters).
        max_model_len: Longest prompt + completion.
        kv_cache_memory_bytes: KV-cache bytes (required on CPU).
        gpu_memory_utilization: Share of the GPU for the engine (CUDA).
        tensor_parallel_size: GPUs per engine.
        progress: Show the engine's progress bar.
        base_urls: ``served``: the servers' roots (``http://host:port``).
        served_model: ``served``: the name the servers serve the policy under.
        weights_dir: ``served``: a directory on a filesystem the trainer and every server share.
        request_timeout_s: ``served``: per generation request.
        sync_timeout_s: ``served``: per weight reload.
    """

    backend: str = "vllm"
    dtype: str | None = None
    max_model_len: int = 4096
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    progress: bool = False
    base_urls: tuple[str, ...] = ()
    served_model: str = "policy"
    weights_dir: str | None = None
    request_timeout_s: float = 3600.0
    sync_timeout_s: float = 600.0


@dataclass
class RecordSettings:
    """Rollout records (``<log_dir>/rollouts/step_*.jsonl``): every n-th step (0: off),
    the first k groups (None: all), text cut at m characters (None: whole)."""

    every_n_steps: int = 1
    max_groups: int | None = None
    max_chars: int | None = 4000


# A module built in Python (a notebook) keeps these dataclasses in its hyperparameters;
# Lightning loads checkpoints with ``weights_only=True``, which refuses classes it does
# not know. They hold only plain fields.
torch.serialization.add_safe_globals([EngineSettings, RecordSettings, SamplingSettings])
