"""Grouped settings of the RL module (each a dataclass, so a YAML config nests them)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineSettings", "RecordSettings"]


@dataclass
class EngineSettings:
    """The rollout engine.

    Args:
        backend: ``vllm`` (colocated ``VLLMEngine``) or ``hf`` (``HFEngine``: no vLLM, slow).
        dtype: Engine weights dtype; None uses the policy's (keep them equal when the
            trainer/engine log-prob gap matters).
        max_model_len: Longest prompt + completion.
        kv_cache_memory_bytes: KV-cache bytes (required on CPU).
        gpu_memory_utilization: Share of the GPU for the engine (CUDA).
        tensor_parallel_size: GPUs per engine.
        progress: Show the engine's progress bar.
    """

    backend: str = "vllm"
    dtype: str | None = None
    max_model_len: int = 4096
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    progress: bool = False


@dataclass
class RecordSettings:
    """Rollout records (``<log_dir>/rollouts/step_*.jsonl``): every n-th step (0: off),
    the first k groups (None: all), text cut at m characters (None: whole)."""

    every_n_steps: int = 1
    max_groups: int | None = None
    max_chars: int | None = 4000
