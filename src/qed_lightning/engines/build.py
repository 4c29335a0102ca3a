"""The rollout engine of an RL run, by ``engine.backend``: a registry, so a new backend
is a new entry. Each builder imports its engine's module only when chosen (vLLM is
heavy and optional)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the settings live with the RL module, which imports this file
    from qed_lightning.modules.rl_settings import EngineSettings

__all__ = ["ENGINE_BACKENDS", "ENGINES_ELSEWHERE", "EngineContext", "build_engine"]


@dataclass(frozen=True)
class EngineContext:
    """What a builder needs from the run besides the engine settings."""

    model_path: str
    dtype: str  # the policy's: the engine's when ``engine.dtype`` is None
    seed: int
    root_dir: str
    global_rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1


def _vllm(eng: EngineSettings, ctx: EngineContext):
    from qed_lightning.engines.vllm_engine import VLLMEngine, set_launcher_env

    if ctx.world_size > 1:
        set_launcher_env(ctx.global_rank, ctx.local_rank, ctx.world_size, ctx.local_world_size)
    return VLLMEngine(ctx.model_path, dtype=eng.dtype or ctx.dtype, max_model_len=eng.max_model_len,
                      gpu_memory_utilization=eng.gpu_memory_utilization,
                      kv_cache_memory_bytes=eng.kv_cache_memory_bytes,
                      tensor_parallel_size=eng.tensor_parallel_size, seed=ctx.seed, progress=eng.progress)


def _served(eng: EngineSettings, ctx: EngineContext):
    from qed_lightning.engines.served_engine import ServedEngine

    weights_dir = eng.weights_dir or str(Path(ctx.root_dir) / "served_weights")
    return ServedEngine(eng.base_urls, model=eng.served_model, weights_dir=weights_dir,
                        model_dir=ctx.model_path if Path(ctx.model_path).is_dir() else None,
                        max_model_len=eng.max_model_len, timeout_s=eng.request_timeout_s,
                        sync_timeout_s=eng.sync_timeout_s)


def _hf(eng: EngineSettings, ctx: EngineContext):
    from qed_lightning.engines.hf_engine import HFEngine

    return HFEngine(ctx.model_path, dtype=eng.dtype or ctx.dtype)


# Backends whose engine runs on other devices than the trainer's: it can generate while
# the trainer trains (a colocated engine shares the device and sleeps meanwhile).
ENGINES_ELSEWHERE = frozenset({"served"})

ENGINE_BACKENDS: dict[str, Callable[["EngineSettings", EngineContext], object]] = {
    "vllm": _vllm, "served": _served, "hf": _hf,
}


def build_engine(eng: EngineSettings, ctx: EngineContext):
    if eng.backend not in ENGINE_BACKENDS:
        raise ValueError(f"engine.backend must be one of {sorted(ENGINE_BACKENDS)}, got {eng.backend!r}")
    return ENGINE_BACKENDS[eng.backend](eng, ctx)
