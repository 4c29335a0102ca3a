"""What a checkpoint holds, and how it reaches the disk."""
from qed_lightning.checkpointing.atomic_io import AtomicCheckpointIO
from qed_lightning.checkpointing.registry import CheckpointRegistry, RNGState

__all__ = ["AtomicCheckpointIO", "CheckpointRegistry", "RNGState"]
