"""Liger-Kernel behind the project's loss contracts: the fused linear cross-entropy
for SFT (a Triton kernel: CUDA only) and the fused linear GRPO loss for RL (chunked
torch code: runs on CPU too, proven equal to ``losses/policy.py`` by the tests).

This is the only module that imports ``liger_kernel``, and only inside functions:
importing it pulls in Triton and costs seconds, so runs and tests never pay for it
unless they ask for a Liger loss.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["LIGER_POLICY_LOSSES", "check_liger_policy_loss", "liger_available", "liger_linear_cross_entropy",
           "liger_policy_loss"]


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


# Our policy losses that Liger's LigerFusedLinearGRPOLoss computes, as (Liger settings
# from ours, whether its per-call normaliser counts the call's samples). Liger divides
# grpo/dr_grpo/sequence-level losses by the rows of *its* call, and dapo/cispo by
# num_items_in_batch / its world size; both are rescaled to the step-global
# normalisers of losses/policy.py. qed_nano is served only without its entropy bonus
# (Liger has none): token sum / N is Liger's dr_grpo with max_completion_length 1.
LIGER_POLICY_LOSSES = {
    "qed_nano": (lambda a, n: dict(loss_type="dr_grpo", epsilon_low=a.get("eps", 4.0),
                                   epsilon_high=a.get("eps", 4.0), max_completion_length=1), True),
    "grpo": (lambda a, n: dict(loss_type="grpo", epsilon_low=a.get("eps", 0.2), epsilon_high=a.get("eps", 0.2)), True),
    "dr_grpo": (lambda a, n: dict(loss_type="dr_grpo", epsilon_low=a.get("eps", 0.2), epsilon_high=a.get("eps", 0.2),
                                  max_completion_length=n.max_tokens), True),
    "dapo": (lambda a, n: dict(loss_type="dapo", epsilon_low=a.get("eps_low", 0.2),
                               epsilon_high=a.get("eps_high", 0.28)), False),
    # Liger's CISPO caps the weight at epsilon_high itself; ours at 1 + eps_high.
    "cispo": (lambda a, n: dict(loss_type="cispo", epsilon_low=0.0, epsilon_high=1 + a.get("eps_high", 0.28)), False),
    "gspo": (lambda a, n: dict(loss_type="grpo", importance_sampling_level="sequence",
                               epsilon_low=a.get("eps_low", 3e-4), epsilon_high=a.get("eps_high", 4e-4)), True),
}


def check_liger_policy_loss(name: str, loss_args: dict) -> None:
    """Raises a ValueError naming the setting when Liger cannot compute loss ``name``."""
    if name not in LIGER_POLICY_LOSSES:
        raise ValueError(f"loss_backend 'liger' serves {sorted(LIGER_POLICY_LOSSES)}, not {name!r}; "
                         "use loss_backend: torch")
    default_entropy = 1e-4 if name == "qed_nano" else 0.0
    if loss_args.get("entropy_coef", default_entropy) != 0:
        raise ValueError(f"loss_backend 'liger' has no entropy bonus; set loss_args.entropy_coef: 0 for {name!r} "
                         "or use loss_backend: torch")
    if not liger_available():
        raise ImportError("loss_backend 'liger' needs liger-kernel (pip install 'liger-kernel>=0.8.5,<0.9')")


def _padded(flat: torch.Tensor, row: torch.Tensor, col: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    out = flat.new_zeros((rows, cols, *flat.shape[1:]))  # [S, T, ...]
    return out.index_put((row, col), flat)


def liger_policy_loss(name: str, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      old_logp: torch.Tensor, advantages: torch.Tensor, seq: torch.Tensor, norms, temperature: float,
                      loss_args: dict, ref_logp: torch.Tensor | None = None, kl_coef: float = 0.0,
                      token_weight: torch.Tensor | None = None, compiled: bool = False) -> torch.Tensor:
    """Policy loss ``name`` through Liger's fused linear GRPO loss, equal to the torch path.

    Inputs are the flat token tensors of one micro-batch (``hidden`` [M, H], the rest
    [M]; each sample's tokens contiguous, as ``pack_rollouts`` lays them out), laid out
    here as Liger's padded ``[S, T]`` rows. ``token_weight`` [M] multiplies each token's
    loss (the truncated importance weight). Returns the loss only: Liger computes
    gradients inside its forward, so metrics come from the caller's no-grad pass.
    """
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    settings, per_call_samples = LIGER_POLICY_LOSSES[name]
    _, row, counts = torch.unique_consecutive(seq, return_inverse=True, return_counts=True)  # [M], [S]
    starts = torch.cumsum(counts, 0) - counts  # [S]
    col = torch.arange(seq.numel(), device=seq.device) - starts[row]  # [M]: position inside its sample
    rows, cols = int(counts.numel()), int(counts.max())
    mask = _padded(torch.ones_like(targets), row, col, rows, cols)  # [S, T]
    seq_adv = advantages[starts].float()  # [S]: an advantage is constant inside its sample
    liger_loss = LigerFusedLinearGRPOLoss(beta=kl_coef, compiled=compiled, use_ref_model=kl_coef > 0,
                                         temperature=temperature, **settings(loss_args, norms))
    loss, *_ = liger_loss(
        _padded(hidden, row, col, rows, cols), weight, _padded(targets, row, col, rows, cols), mask, seq_adv,
        old_per_token_logps=_padded(old_logp.float(), row, col, rows, cols),
        ref_per_token_logps=_padded(ref_logp.float(), row, col, rows, cols) if kl_coef > 0 else None,
        vllm_is_ratio=_padded(token_weight.float(), row, col, rows, cols) if token_weight is not None else None,
        num_items_in_batch=None if per_call_samples else norms.tokens,
    )
    liger_world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    scale = rows / norms.samples * norms.world_size if per_call_samples else norms.world_size / liger_world
    return loss * scale
