"""Training losses. SFT: token cross-entropy fused with the LM head (``sft``), with
Liger's CUDA kernel as an optional drop-in (``liger``, imported lazily)."""
from qed_lightning.losses.liger import liger_available, liger_linear_cross_entropy
from qed_lightning.losses.sft import (
    SFT_LOSSES,
    SftLossFn,
    chunked_linear_cross_entropy,
    get_sft_loss,
    reference_linear_cross_entropy,
)

__all__ = [
    "SFT_LOSSES",
    "SftLossFn",
    "chunked_linear_cross_entropy",
    "get_sft_loss",
    "liger_available",
    "liger_linear_cross_entropy",
    "reference_linear_cross_entropy",
]
