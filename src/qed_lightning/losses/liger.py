"""Liger-Kernel's fused linear cross-entropy behind the project's SFT-loss contract.

This is the only module that imports ``liger_kernel``, and only inside functions:
importing it pulls in Triton, costs seconds, and its kernels need a GPU, so CPU
runs and tests must never pay for it unless they ask for loss "liger".
"""
from __future__ import annotations

import functools

import torch

__all__ = ["liger_available", "liger_linear_cross_entropy"]


@functools.lru_cache(maxsize=None)
def liger_available() -> bool:
    """Whether ``liger_kernel`` (and the Triton it needs) imports in this environment.

    Says nothing about a GPU being present; the kernels still need CUDA to run.
    """
    try:
        import liger_kernel.transformers.functional  # noqa: F401
    except Exception:  # Triton can fail with more than ImportError on odd installs.
        return False
    return True


def liger_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of ``hidden @ weight.T + bias`` via Liger's Triton kernel.

    Same contract as :func:`qed_lightning.losses.sft.chunked_linear_cross_entropy`:
    ``hidden`` [N, H], ``weight`` [V, H], ``labels`` [N] already shifted; returns
    ``(loss_sum, n_tokens)`` with the loss in fp32 and the count as an int64 scalar.

    Raises:
        RuntimeError: ``hidden`` is not on a CUDA device.
        ImportError: liger-kernel is not installed.
    """
    if not hidden.is_cuda:
        raise RuntimeError(
            "Liger's fused linear cross-entropy needs a CUDA device (its Triton kernels do not run "
            f"on {hidden.device.type!r}); use SFT loss 'chunked' on CPU"
        )
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError as err:
        raise ImportError(
            "SFT loss 'liger' needs liger-kernel (pip install 'liger-kernel>=0.8.5,<0.9'); "
            "or use SFT loss 'chunked'"
        ) from err

    if hidden.dim() != 2 or labels.shape != (hidden.shape[0],):
        raise ValueError(
            f"hidden must be [N, H] and labels [N]; got {tuple(hidden.shape)} and {tuple(labels.shape)}"
        )
    # Liger accumulates grad_weight only when the *input* requires grad (it gates the
    # whole gradient pass on it), so a frozen trunk under a trainable head would get
    # no head gradient at all. A detached, grad-requiring alias switches that pass on;
    # its own gradient is dropped with the graph.
    if (
        torch.is_grad_enabled()
        and not hidden.requires_grad
        and (weight.requires_grad or (bias is not None and bias.requires_grad))
    ):
        hidden = hidden.detach().requires_grad_(True)

    # The functional form, not LigerFusedLinearCrossEntropyLoss: the module's forward
    # takes (weight, input, ...) in that order, the reverse of F.linear and of ours.
    loss = liger_fused_linear_cross_entropy(
        hidden,
        weight,
        labels.contiguous(),
        bias=bias,
        ignore_index=ignore_index,
        reduction="sum",
        # Default (None) accumulates a bf16 head's gradient in bf16 across chunks;
        # fp32 matches the chunked loss and is cast back to the weight dtype.
        accum_dtype=torch.float32,
    )
    return loss, (labels != ignore_index).sum()


def apply_liger_kernels(model) -> bool:
    """Swap RMSNorm, RoPE and SwiGLU of ``model`` for Liger's Triton kernels (CUDA only).

    The loss is not patched here: qed computes it itself (``CausalLMWithLoss``), so
    Liger's forward-replacing fused cross-entropy patch stays off. Returns whether the
    model's architecture is one Liger knows.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("Liger kernels need a CUDA device; set liger_kernels: false on CPU")
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    model_type = getattr(model.config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return False
    _apply_liger_kernel_to_instance(
        model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    return True
