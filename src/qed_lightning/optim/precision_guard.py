"""Refuses an optimizer whose updates the weights' own dtype cannot hold.

An AdamW step moves each element by about ``lr`` (lr * m / (sqrt(v) + eps), with
|m / sqrt(v)| <= ~1, and exactly 1 while a gradient keeps its sign). An optimizer that
adds this update to a bf16 or fp16 parameter in place rounds the sum back to that
dtype: an element whose half-ulp (half the gap to the next representable value) is
larger than the update comes back unchanged, at every step, so it never moves at all.
bf16 keeps 8 significant bits: a weight of 0.02 has a half-ulp of 6.1e-5, 61 times an
lr of 1e-6. For weights drawn from N(0, 0.02) only those below 2^-11 in magnitude can
move at lr 1e-6 (about 2% of them), and below 2^-7 at lr 3e-5 (about 30%).

The fix is an fp32 master copy (``trainer.precision: bf16-mixed`` with
``model.dtype: float32``): the weights, gradients and optimizer state stay fp32 and
the forward computes in bf16 under autocast. The check below measures, on the actual
parameters, the share of trainable elements a step of ``lr`` can change, and refuses a
run where most of them cannot.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from qed_lightning.optim import ROUNDS_UPDATES_TO_PARAM_DTYPE

__all__ = ["MIN_RESOLVABLE_SHARE", "check_update_resolution", "half_ulp", "resolvable_counts"]

# Refuse when fewer than half of the trainable elements can move: then most of the
# model is frozen by rounding, not by the optimizer, and the run "trains" a minority of
# its weights (the paper's RL lr on bf16 weights moves ~2%, its SFT lr ~30%). bf16
# setups that do train (e.g. lr 1e-4 on weights of scale 0.02: ~88%) stay allowed.
MIN_RESOLVABLE_SHARE = 0.5

_CHUNK = 1 << 22  # elements per pass: bounded temporaries on a multi-billion-element model


def half_ulp(t: torch.Tensor) -> torch.Tensor:
    """Half the spacing of ``t``'s dtype at each element's magnitude, in float64 (the
    largest change that rounding to nearest still erases). Subnormals and zero get the
    subnormal spacing."""
    info = torch.finfo(t.dtype)
    mag = t.detach().to(torch.float64).abs().clamp_min(info.tiny)  # [*]
    _, exp = torch.frexp(mag)  # mag = m * 2^exp, m in [0.5, 1): the binade starts at 2^(exp - 1)
    return torch.ldexp(torch.full_like(mag, info.eps / 2), exp - 1)  # eps * 2^(exp-1) / 2


def _local(p: torch.Tensor) -> torch.Tensor:
    # FSDP2 parameters are DTensors: count this rank's shard (the caller sums over ranks)
    return p.to_local() if hasattr(p, "to_local") else p


def resolvable_counts(params: Iterable[torch.Tensor], lr: float) -> tuple[int, int]:
    """``(elements whose half-ulp <= lr, all elements)`` over the parameters that
    require a gradient, each in its own dtype."""
    resolvable = total = 0
    for p in params:
        if not p.requires_grad:
            continue
        flat = _local(p).detach().reshape(-1)  # [n]
        for start in range(0, flat.numel(), _CHUNK):
            chunk = flat[start:start + _CHUNK]  # [c]
            resolvable += int((half_ulp(chunk) <= lr).sum())
            total += chunk.numel()
    return resolvable, total


def check_update_resolution(
    params: Iterable[torch.Tensor],
    *,
    optimizer: str,
    lr: float,
    model_dtype: str,
    precision: str | None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    min_share: float = MIN_RESOLVABLE_SHARE,
) -> float | None:
    """Raises ``ValueError`` when ``optimizer`` updates the parameters in their own
    dtype and fewer than ``min_share`` of the trainable elements can move by ``lr``.

    Args:
        params: The parameters the optimizer will update (after the precision plugin
            converted them, i.e. in the dtype the step will write).
        optimizer: Name in ``optim.OPTIMIZERS``.
        lr: Peak learning rate.
        model_dtype: ``model.dtype`` as configured (for the message).
        precision: ``trainer.precision`` (for the message).
        reduce: Sums a tensor over ranks (sharded parameters); None on one process.
        min_share: The threshold (see ``MIN_RESOLVABLE_SHARE``).

    Returns:
        The share of elements a step of ``lr`` can change, or None when the optimizer
        does not round its update into the parameters' dtype (nothing to check).
    """
    if optimizer not in ROUNDS_UPDATES_TO_PARAM_DTYPE:
        return None
    params = list(params)
    counts = torch.tensor(resolvable_counts(params, lr), dtype=torch.float64)  # [2]
    if reduce is not None:
        counts = reduce(counts)
    resolvable, total = (float(c) for c in counts.cpu())
    share = resolvable / total if total else 1.0
    if share < min_share:
        dtypes = sorted({str(_local(p).dtype).removeprefix("torch.") for p in params if p.requires_grad})
        raise ValueError(
            f"model.lr={lr:g} is below what the weights can resolve: with model.dtype={model_dtype!r} and "
            f"trainer.precision={precision!r} the trainable parameters are {'/'.join(dtypes)} and optimizer "
            f"{optimizer!r} adds each update (about lr per element) to them in place, so only {share:.1%} of "
            f"their elements can change (half-ulp <= lr; at least {min_share:.0%} required) and the rest would "
            "never move. Keep an fp32 master copy: trainer.precision: bf16-mixed with model.dtype: float32 "
            "(bf16 compute under autocast; fp32 weights, gradients and AdamW state), or raise model.lr."
        )
    return share
