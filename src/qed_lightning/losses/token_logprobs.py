"""Per-token log-probs and entropy of chosen tokens, without ``[N, V]`` logits alive.

RL needs log pi(token) under the *sampling* distribution, so logits are divided by
the sampling temperature (the engine's processed log-probs are computed the same
way), and the entropy of that distribution for the entropy bonus. A custom autograd
function walks the rows in chunks: forward keeps only the per-row log-sum-exp, and
backward recomputes each chunk's ``[C, V]`` logits and adds its share of the LM-head
gradient into one ``[V, H]`` buffer in place, so the peak holds one head-sized gradient
rather than one per chunk plus the running sum (what autograd does with per-chunk
activation checkpointing).

Under autocast (``trainer.precision: bf16-mixed``: fp32 master weights) the projections
run in autocast's dtype, with the head cast once per pass rather than by autocast once
per chunk, and the head's gradient is accumulated in fp32 from the bf16 products, as
Liger's fused kernels do. Autocast itself is off inside: the dtypes are chosen here, the
same in forward and backward.
"""
from __future__ import annotations

import torch

__all__ = ["token_logprobs_and_entropy"]


def _projection_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The inputs' common dtype, or autocast's where autocast would lower an fp32 matmul."""
    dtype = torch.promote_types(hidden.dtype, weight.dtype)
    device = hidden.device.type
    if dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return dtype


def _addmm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in place, ``acc`` at least as wide as ``a`` and ``b``."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif acc.is_cuda and torch.cuda.get_device_capability(acc.device)[0] >= 8:
        # bf16 tensor-core products summed in fp32, no [V, H] temporary (as Liger does)
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:  # CPU has no out_dtype matmul: the same products (exact in fp32), summed in fp32
        acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    # projection in the input dtype, softmax math in at least fp32
    return (hidden @ weight.t()).to(torch.promote_types(hidden.dtype, torch.float32)) / temperature  # [C, V]


class _ChunkedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk_size: int):
        rows = hidden.shape[0]
        mm = _projection_dtype(hidden, weight)
        logp = torch.empty(rows, dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)  # [M]
        entropy = torch.empty_like(logp)  # [M]
        lse_all = torch.empty_like(logp)  # [M]
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(mm)  # [V, H]: one cast per pass (no copy when the dtypes agree)
            for start in range(0, rows, chunk_size):
                end = min(start + chunk_size, rows)
                logits = _chunk_logits(hidden[start:end].to(mm), w, temperature)  # [C, V]
                lse = logits.logsumexp(-1)  # [C]
                logp[start:end] = logits.gather(-1, targets[start:end, None])[:, 0] - lse
                probs = (logits - lse[:, None]).exp()  # [C, V]
                entropy[start:end] = lse - (probs * logits).sum(-1)  # H = lse - E_p[z]
                lse_all[start:end] = lse
        ctx.save_for_backward(hidden, weight, targets, lse_all, entropy)
        ctx.temperature, ctx.chunk_size, ctx.mm = temperature, chunk_size, mm
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, lse_all, entropy = ctx.saved_tensors
        t, mm = ctx.temperature, ctx.mm
        acc = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None  # [M, H]
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None  # [V, H]
        g_lp = torch.zeros_like(lse_all) if grad_logp is None else grad_logp.to(lse_all.dtype)  # [M]
        g_ent = torch.zeros_like(lse_all) if grad_entropy is None else grad_entropy.to(lse_all.dtype)  # [M]
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(mm)  # [V, H]
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                end = min(start + ctx.chunk_size, hidden.shape[0])
                h = hidden[start:end].to(mm)  # [C, H]
                logits = _chunk_logits(h, w, t)  # [C, V]
                logq = logits - lse_all[start:end, None]  # [C, V] log-probs
                probs = logq.exp()
                # d logp_target / dz = onehot - p;  d H / dz = -p (log p + H)
                grad_z = -probs * (g_lp[start:end, None] + g_ent[start:end, None] * (logq + entropy[start:end, None]))
                grad_z[torch.arange(end - start, device=h.device), targets[start:end]] += g_lp[start:end]
                grad_z = (grad_z / t).to(mm)  # [C, V]: through logits = (h W^T) / t
                if need_h:
                    grad_h[start:end] = grad_z @ w
                if need_w:
                    _addmm_(grad_w, grad_z.t(), h)  # in place: one [V, H] buffer for all chunks
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


def token_logprobs_and_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Args:
        hidden: [M, H] final hidden states at the positions that predict ``targets``.
        weight: [V, H] LM head.
        targets: [M] token ids.
        temperature: Sampling temperature (> 0).
        chunk_size: Rows per chunk (the ``[chunk, V]`` logits are the working set).

    Returns:
        ``(logp [M], entropy [M])`` in fp32 (fp64 for fp64 inputs), differentiable w.r.t.
        ``hidden`` and ``weight``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32) + 0 * weight.sum()  # [0], still in the graph
        return empty, empty.clone()
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _ChunkedTokenLogprobs.apply(hidden, weight, targets, temperature, chunk_size)
    with torch.no_grad():
        return _ChunkedTokenLogprobs.forward(_NoCtx(), hidden, weight, targets, temperature, chunk_size)


class _NoCtx:
    """Stands in for autograd's ctx when nothing needs a gradient."""

    def save_for_backward(self, *tensors) -> None:
        pass
