"""What fits on one GPU: a rough memory budget for colocated RL (trainer + engine).

Counts what dominates, per component, in GiB: trainer weights, gradients, optimizer
states (AdamW: two fp32 moments; 8-bit AdamW: two 1-byte moments; offloaded: none on
the card), optional fp32 master weights, activations per trained token with gradient
checkpointing (each layer's input kept, one layer's working set recomputed), the
chunked loss's logits buffer, the engine's own copy of the weights, and the KV cache
per token in flight. It ignores allocator fragmentation, CUDA context (~0.5-1 GiB)
and framework buffers: leave 10-15% headroom.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["MemoryEstimate", "ModelShape", "QWEN3_4B", "estimate_memory"]

GIB = 1024**3
OPTIMIZER_BYTES = {"adamw": 8, "adamw_8bit": 2, "offload": 0}  # per parameter, both moments


@dataclass(frozen=True)
class ModelShape:
    params: float
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int


QWEN3_4B = ModelShape(params=4.02e9, layers=36, hidden=2560, intermediate=9728, kv_heads=8, head_dim=128, vocab=151936)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    master_weights: float
    activations: float
    loss_buffer: float
    engine_weights: float
    kv_cache: float

    @property
    def total(self) -> float:
        """Everything at once: an engine that never sleeps."""
        return sum(asdict(self).values())

    @property
    def training_phase(self) -> float:
        """While the trainer trains, with the engine asleep (weights offloaded, KV freed)."""
        return self.weights + self.gradients + self.optimizer + self.master_weights + self.activations + self.loss_buffer

    @property
    def generation_phase(self) -> float:
        """While the engine generates, with the trainer's gradients freed."""
        return self.weights + self.optimizer + self.master_weights + self.engine_weights + self.kv_cache

    @property
    def peak_with_sleep(self) -> float:
        return max(self.training_phase, self.generation_phase)

    def table(self) -> str:
        rows = [f"| {k.replace('_', ' ')} | {v:.1f} |" for k, v in asdict(self).items()]
        return "\n".join(["| component | GiB |", "| --- | ---: |", *rows, f"| **total** | **{self.total:.1f}** |"])


def estimate_memory(
    shape: ModelShape,
    train_tokens: int,
    kv_tokens: int,
    optimizer: str = "adamw",
    weight_bytes: int = 2,
    master_weights: bool = False,
    gradient_checkpointing: bool = True,
    engine_colocated: bool = True,
    kv_bytes: int = 2,
    loss_chunk_rows: int = 1024,
) -> MemoryEstimate:
    """GiB per component for one card.

    Args:
        shape: The model (``QWEN3_4B`` for the paper's policy).
        train_tokens: Tokens in one micro-batch (a packed row: prompt + completion).
        kv_tokens: Tokens whose KV the engine holds at once (sequences in flight x length).
        optimizer: ``adamw`` (fp32 moments), ``adamw_8bit`` or ``offload``.
        weight_bytes: 2 for bf16 weights (and gradients), 4 for fp32.
        master_weights: An fp32 copy beside bf16 weights (mixed precision).
    """
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}, got {optimizer!r}")
    p, s = shape.params, shape
    if gradient_checkpointing:
        # each layer's input kept + one layer's working set (attention q/k/v/o, MLP up/gate/act)
        per_token = s.layers * s.hidden + 6 * s.hidden + 3 * s.intermediate
    else:
        per_token = s.layers * (8 * s.hidden + 4 * s.intermediate)
    kv_per_token = 2 * s.layers * s.kv_heads * s.head_dim * kv_bytes
    return MemoryEstimate(
        weights=p * weight_bytes / GIB,
        gradients=p * weight_bytes / GIB,
        optimizer=p * OPTIMIZER_BYTES[optimizer] / GIB,
        master_weights=p * 4 / GIB if master_weights else 0.0,
        activations=train_tokens * per_token * weight_bytes / GIB,
        loss_buffer=2 * min(loss_chunk_rows, train_tokens) * s.vocab * 4 / GIB,  # fp32 chunk + its softmax
        engine_weights=p * weight_bytes / GIB if engine_colocated else 0.0,
        kv_cache=kv_tokens * kv_per_token / GIB,
    )
