"""What fits on one GPU: a rough memory budget for colocated RL (trainer + engine).

Counts what dominates, per component, in GiB: trainer weights, gradients, optimizer
states (AdamW: two fp32 moments; 8-bit AdamW: two 1-byte moments; offloaded: none on
the card), optional fp32 master weights beside bf16 ones, the unit FSDP gathers at once
(sharded runs), activations per trained token with gradient checkpointing (each layer's
input kept, one layer's working set recomputed), the chunked loss's logits buffer, the
engine's own copy of the weights, and the KV cache per token in flight. It ignores
allocator fragmentation, CUDA context (~0.5-1 GiB) and framework buffers: leave 10-15%
headroom.

The bytes per parameter follow ``trainer.precision`` (``PRECISIONS``). ``bf16-mixed``
(the paper configs) keeps the weights, gradients and AdamW moments in fp32 (the master
copy: 4 + 4 + 8 bytes per parameter) and computes in bf16 under autocast; on one
process the residual stream stays fp32 (fp32 embeddings plus bf16 branch outputs), so
the layer inputs kept by checkpointing take 4 bytes per element. Sharded (FSDP2 with
its mixed-precision policy, or ZeRO-3 bf16), the layers gather bf16 and the residual
stream is bf16 too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PRECISIONS", "MemoryEstimate", "ModelShape", "PrecisionBytes", "QWEN3_4B", "estimate_memory"]

GIB = 1024**3
OPTIMIZER_BYTES = {"adamw": 8, "adamw_8bit": 2, "offload": 0}  # per parameter, both moments


@dataclass(frozen=True)
class PrecisionBytes:
    """Bytes per element of what a ``trainer.precision`` keeps."""

    weights: int  # the parameters the optimizer steps
    gradients: int  # accumulated over the micro-batches in this dtype
    compute: int  # matmul activations; what a sharded unit gathers
    residual: int  # the residual stream on one process (the layer inputs checkpointing keeps)


PRECISIONS: dict[str, PrecisionBytes] = {
    "bf16-mixed": PrecisionBytes(weights=4, gradients=4, compute=2, residual=4),
    "bf16-true": PrecisionBytes(weights=2, gradients=2, compute=2, residual=2),
    "32-true": PrecisionBytes(weights=4, gradients=4, compute=4, residual=4),
}


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
    gathered: float
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
        return (self.weights + self.gradients + self.optimizer + self.master_weights + self.gathered
                + self.activations + self.loss_buffer)

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
    precision: str = "bf16-mixed",
    master_weights: bool = False,
    gradient_checkpointing: bool = True,
    engine_colocated: bool = True,
    engine_bytes: int = 2,
    kv_bytes: int = 2,
    loss_chunk_rows: int = 1024,
    shards: int = 1,
) -> MemoryEstimate:
    """GiB per component for one card.

    Args:
        shape: The model (``QWEN3_4B`` for the paper's policy).
        train_tokens: Tokens in one micro-batch (a packed row: prompt + completion).
        kv_tokens: Tokens whose KV the engine holds at once (sequences in flight x length).
        optimizer: ``adamw`` (fp32 moments), ``adamw_8bit`` or ``offload``.
        precision: ``trainer.precision``: ``bf16-mixed`` (fp32 master weights and
            gradients, bf16 compute), ``bf16-true`` or ``32-true`` (see ``PRECISIONS``).
        master_weights: An fp32 copy beside bf16 weights (DeepSpeed's bf16 optimizer
            with ``bf16-true`` weights); ``bf16-mixed`` weights are the master already.
        engine_bytes: Bytes per weight of the colocated engine (2: bf16).
        shards: Ranks the weights, gradients and optimizer states are sharded over
            (FSDP2, ZeRO-3); 1: every rank holds them whole (one GPU, DDP).
    """
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}, got {optimizer!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    b = PRECISIONS[precision]
    if master_weights and b.weights == 4:
        raise ValueError(f"precision {precision!r} keeps fp32 weights: they are the master copy (master_weights=False)")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    p, s = shape.params, shape
    # one process keeps the residual stream in the weights' dtype (fp32 under autocast);
    # sharded, the units gather in the compute dtype, the embeddings included
    residual = b.residual if shards == 1 else b.compute
    if gradient_checkpointing:
        # each layer's input kept + one layer's working set (attention q/k/v/o, MLP up/gate/act)
        act_bytes = s.layers * s.hidden * residual + (6 * s.hidden + 3 * s.intermediate) * b.compute
        weight_copies = 0.0  # a layer's bf16 weight copy lives only while it is recomputed
    else:
        act_bytes = s.layers * (8 * s.hidden + 4 * s.intermediate) * b.compute
        # autocast's bf16 copy of each weight is saved for backward (sharded: the gathered copy is freed)
        weight_copies = p * b.compute if b.compute != b.weights and shards == 1 else 0.0
    kv_per_token = 2 * s.layers * s.kv_heads * s.head_dim * kv_bytes
    head_copy = s.vocab * s.hidden * b.compute if b.compute != b.weights and shards == 1 else 0
    # the root unit (embeddings = the tied head) stays gathered through the loss, plus one layer
    unit_params = s.vocab * s.hidden + (p - s.vocab * s.hidden) / s.layers
    return MemoryEstimate(
        weights=p * b.weights / shards / GIB,
        gradients=p * b.gradients / shards / GIB,
        optimizer=p * OPTIMIZER_BYTES[optimizer] / shards / GIB,
        master_weights=p * 4 / shards / GIB if master_weights else 0.0,
        gathered=unit_params * b.compute / GIB if shards > 1 else 0.0,
        activations=(train_tokens * act_bytes + weight_copies) / GIB,
        # an fp32 logits chunk + its softmax; under autocast on one process also the head's bf16 copy
        loss_buffer=(2 * min(loss_chunk_rows, train_tokens) * s.vocab * 4 + head_copy) / GIB,
        engine_weights=p * engine_bytes / GIB if engine_colocated else 0.0,
        kv_cache=kv_tokens * kv_per_token / GIB,
    )
