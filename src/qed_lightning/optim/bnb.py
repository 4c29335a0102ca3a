"""The project's only bitsandbytes import: 8-bit optimizer states (about a quarter
of AdamW's fp32 state memory), which lets larger policies fit one card."""
from __future__ import annotations

import torch


def adamw_8bit(params, *, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    try:
        import bitsandbytes as bnb
    except ImportError as err:  # pragma: no cover - it is a core dependency
        raise ImportError("optimizer 'adamw_8bit' needs bitsandbytes: pip install bitsandbytes") from err
    return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay, betas=betas)
