"""Optimizers and learning-rate schedules by name: a registry each, so a new choice
is a new entry, not a new branch."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


def _adamw(params, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)


def _adamw_8bit(params, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    from qed_lightning.optim.bnb import adamw_8bit

    return adamw_8bit(params, lr=lr, weight_decay=weight_decay, betas=betas)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "adamw_8bit": _adamw_8bit,
}

# Optimizers that add each update to the parameter in the parameter's own dtype (round
# to nearest): on bf16/fp16 weights an update below half an ulp is lost, which
# ``precision_guard`` checks. An entry that keeps a master copy or rounds
# stochastically would not be listed here.
ROUNDS_UPDATES_TO_PARAM_DTYPE: frozenset[str] = frozenset({"adamw", "adamw_8bit"})


def build_optimizer(
    name: str, params: Iterable, *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, betas=betas)


def cosine_with_warmup(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_with_warmup(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    del total_steps, min_ratio  # same signature as every schedule in the registry
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


SCHEDULES: dict[str, Callable[..., float]] = {
    "cosine": cosine_with_warmup,
    "constant": constant_with_warmup,
}


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    warmup = math.ceil(warmup_ratio * total_steps)
    fn = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: fn(step, total_steps=total_steps, warmup_steps=warmup)
    )
