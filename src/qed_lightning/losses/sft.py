"""Token-level SFT loss: the LM head and cross-entropy fused, so the [N, V] logits
never exist all at once.

For a small model the logits dominate activation memory: 8k tokens x 150k vocab in
fp32 is ~5 GB, several times the model. ``chunked_linear_cross_entropy`` walks the
tokens in row chunks and, while each chunk's logits are alive, turns them straight
into the loss *and* the gradients w.r.t. hidden, weight and bias (the trick Liger's
fused linear cross-entropy uses). Backward then only rescales stored gradients.
It is pure torch, so it runs on CPU and is the reference implementation the Liger
kernel is checked against on GPU.

Every loss here has the same contract::

    loss_sum, n_tokens = fn(hidden, weight, labels, *, bias=None, ignore_index=-100)

``hidden`` is [N, H], ``weight`` the LM head [V, H], ``labels`` [N] already shifted
by the caller. The loss is a *sum* and the count is returned beside it, so the
caller picks the normalisation (per micro-batch, per global batch, per sequence)
without the loss having to know about gradient accumulation.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# The wrapper module imports liger_kernel only inside its functions, so this import
# stays pure torch; the Triton stack is touched only when "liger" is actually called.
from qed_lightning.losses.liger import liger_linear_cross_entropy

__all__ = [
    "SFT_LOSSES",
    "SftLossFn",
    "chunked_linear_cross_entropy",
    "get_sft_loss",
    "reference_linear_cross_entropy",
]

SftLossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _check_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None,
) -> None:
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, H], got shape {tuple(hidden.shape)}; flatten batch and time first")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must be [V, H] with H={hidden.shape[1]} (the LM head), got shape {tuple(weight.shape)}"
        )
    if labels.shape != (hidden.shape[0],):
        raise ValueError(f"labels must be [N] with N={hidden.shape[0]}, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V] with V={weight.shape[0]}, got shape {tuple(bias.shape)}")


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    # At least fp32: bf16/fp16 softmax over a 150k vocab loses the target's mass in
    # rounding. fp64 inputs stay fp64 so tests can compare to autograd exactly.
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Loss and all gradients in one chunked forward; backward is a rescale.

    Keeps only grad_hidden [N, H], grad_weight [V, H] and grad_bias [V] (in the
    input dtypes), never the logits, and never the inputs: no recompute needed.
    One backward per forward: the kept gradients are handed over, not copied.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        chunk_size: int,
        ignore_index: int,
        grad_flags: tuple[bool, bool, bool],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        want_h, want_w, want_b = grad_flags
        want_any = want_h or want_w or want_b
        cdt = _compute_dtype(hidden, weight, bias)
        device = hidden.device

        mask = labels != ignore_index  # [N]
        n_tokens = mask.sum()
        # One host sync, then only non-ignored rows are ever projected: SFT masks the
        # prompt, often half the tokens, and their loss and gradients are exactly 0.
        rows = mask.nonzero().squeeze(1)  # [M]
        n_rows = rows.numel()

        # Matmuls run in the inputs' dtype (bf16 on tensor cores: an fp32 projection was
        # measured 9x slower than the bf16 one on an H200); only the logits and the
        # softmax are upcast, as Hugging Face's loss and Liger's kernel do.
        mm_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        w = weight.to(mm_dtype)  # [V, H], no copy when dtypes already agree
        b = bias.to(cdt) if bias is not None else None  # [V]

        loss = torch.zeros((), dtype=cdt, device=device)
        grad_h = torch.zeros_like(hidden) if want_h else None  # [N, H]
        # Accumulated in the weight's dtype across chunks (as Liger does): an fp32
        # accumulator would cost a [V, H] fp32 buffer plus a cast per chunk.
        grad_w = torch.zeros_like(w) if want_w else None  # [V, H]
        grad_b = torch.zeros_like(b) if (want_b and b is not None) else None  # [V]

        # Lightning's bf16-mixed wraps the step in autocast, which would silently run
        # these fp32 matmuls in bf16 and undo the point of computing in fp32.
        autocast_off = (
            torch.autocast(device.type, enabled=False)
            if torch.amp.autocast_mode.is_autocast_available(device.type)
            else torch.autocast("cpu", enabled=False)
        )
        with autocast_off:
            for start in range(0, n_rows, chunk_size):
                idx = rows[start : start + chunk_size]  # [C]
                h = hidden.index_select(0, idx).to(mm_dtype)  # [C, H]
                tgt = labels.index_select(0, idx).long().unsqueeze(1)  # [C, 1]

                logits = (h @ w.t()).to(cdt)  # [C, V]
                if b is not None:
                    logits += b
                # logsumexp by hand, in place: torch.logsumexp allocates a second
                # [C, V] temporary, which at a 150k vocabulary doubles the chunk's cost.
                target_logit = logits.gather(1, tgt)  # [C, 1]
                row_max = logits.amax(dim=1, keepdim=True)  # [C, 1]
                probs = logits.sub_(row_max).exp_()  # [C, V], unnormalised
                row_sum = probs.sum(dim=1, keepdim=True)  # [C, 1]
                loss += (row_max + row_sum.log() - target_logit).sum()

                if not want_any:
                    continue
                # d(lse - z_y)/dz = softmax(z) - onehot(y), built in the same buffer.
                grad_z = probs.div_(row_sum)  # [C, V]
                grad_z.scatter_add_(1, tgt, torch.full_like(tgt, -1, dtype=cdt))
                if grad_h is not None:
                    grad_h.index_copy_(0, idx, (grad_z.to(mm_dtype) @ w).to(grad_h.dtype))
                if grad_w is not None:
                    grad_w.addmm_(grad_z.t().to(mm_dtype), h)
                if grad_b is not None:
                    grad_b += grad_z.sum(0)
                del logits, probs, grad_z, h

        # Held as attributes, not save_for_backward: backward hands these buffers to
        # autograd and drops its own reference, so the [V, H] gradient is never copied.
        ctx.grads = [
            grad_h,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
        ]
        ctx.mark_non_differentiable(n_tokens)
        return loss, n_tokens

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor, _grad_count: torch.Tensor | None):  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError(
                "chunked_linear_cross_entropy supports one backward per forward (its gradients "
                "were computed in forward and already handed over); recompute the loss instead "
                "of backpropagating through a retained graph twice"
            )
        grads, ctx.grads = ctx.grads, None
        # Scaled in place and released: autograd can then adopt the buffer as .grad
        # instead of cloning it, so the peak holds one [V, H] gradient, not two.
        out = [None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads]
        return out[0], out[1], out[2], None, None, None, None


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 256,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``labels``,
    without materialising the [N, V] logits.

    Peak extra memory is one [chunk_size, V] buffer plus the gradients themselves;
    the projections run in the inputs' dtype and the logits/softmax math in fp32
    (fp64 if an input is fp64), even under autocast. Gradients come back in each input's own dtype.

    Args:
        hidden: [N, H] final hidden states (batch and time flattened).
        weight: [V, H] LM head weight.
        labels: [N] integer targets, already aligned with ``hidden``.
        bias: optional [V] LM head bias.
        chunk_size: rows of logits alive at once; trades memory for kernel launches.
        ignore_index: label value that contributes neither loss nor gradient.

    Returns:
        ``(loss_sum, n_tokens)``: a scalar in the compute dtype (fp32 for bf16/fp16/fp32
        inputs) and the int64 count of non-ignored labels.
    """
    _check_inputs(hidden, weight, labels, bias)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    # Decided here, not from ctx.needs_input_grad: inside forward grad mode is always
    # off, and under no_grad the flags still say True, which would waste the gradient
    # work on every validation step.
    grad_on = torch.is_grad_enabled()
    grad_flags = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_size, ignore_index, grad_flags)


def reference_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain version: full [N, V] logits, then ``F.cross_entropy(reduction="sum")``.

    The baseline for tests and benchmarks. Like Hugging Face's causal-LM loss, the
    projection runs in the input dtype and only the logits are upcast to fp32.
    Same arguments and return as :func:`chunked_linear_cross_entropy`.
    """
    _check_inputs(hidden, weight, labels, bias)
    logits = F.linear(hidden, weight, bias)  # [N, V]
    logits = logits.to(_compute_dtype(logits))  # [N, V]
    loss = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="sum")
    return loss, (labels != ignore_index).sum()


SFT_LOSSES: dict[str, SftLossFn] = {
    "chunked": chunked_linear_cross_entropy,
    "reference": reference_linear_cross_entropy,
    "liger": liger_linear_cross_entropy,
}


def get_sft_loss(name: str) -> SftLossFn:
    """The SFT loss registered under ``name`` (one of :data:`SFT_LOSSES`)."""
    try:
        return SFT_LOSSES[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in sorted(SFT_LOSSES))
        raise ValueError(f"unknown SFT loss {name!r}; valid names: {valid}") from None
