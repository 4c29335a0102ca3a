"""RL policy losses: name -> one pure function, over the completion tokens of a micro-batch.

Every loss takes flat token tensors (only tokens that count are passed in)::

    loss, metrics = fn(logp, old_logp, advantages, seq, entropy, norms, ref_logp=None, kl_coef=0.0,
                       **settings)

``logp`` [M] trainer log-probs (logits / temperature, differentiable), ``old_logp`` [M]
the sampling log-probs, ``advantages`` [M] each token's sequence advantage, ``seq``
[M] the token's sample index, ``entropy`` [M], ``ref_logp`` [M] a frozen reference's
log-probs (only with ``kl_coef`` > 0). The KL penalty is per token, the k3 estimator
exp(ref - logp) - (ref - logp) - 1 of KL(pi || ref), subtracted from each token's
objective before the loss's own aggregation (as TRL and Liger do), so it shares the
loss's normaliser. ``norms`` holds step-global counts, so
the losses of all micro-batches and ranks add up to the step's objective: each
normaliser is over the whole optimizer step, never per micro-batch, and losses are
multiplied by the world size because DDP averages gradients over ranks.
``metrics`` are sums (divide by ``token_count``), so micro-batches add up too;
``clip_count`` counts the tokens whose clip is active (GSPO clips whole sequences: every
token of a clipped sequence counts), so ``clip_count / token_count`` is a share of tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["POLICY_LOSSES", "PolicyLossFn", "StepNorms", "get_policy_loss", "kl_k3"]


@dataclass(frozen=True)
class StepNorms:
    samples: int  # N: samples in the optimizer step, all ranks (paper: 1024)
    tokens: int  # completion tokens that count in the step, all ranks
    max_tokens: int  # sampling max_tokens (Dr. GRPO's constant)
    seq_lengths: torch.Tensor  # [N_local] counted tokens of each local sample
    world_size: int = 1


PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _ppo_objective(ratio, advantages, eps_low, eps_high):
    """min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) and where the clip is active."""
    unclipped = ratio * advantages  # [M]
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * advantages  # [M]
    return torch.minimum(unclipped, clipped), (clipped < unclipped)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """[M] per-token k3 estimate of KL(pi || ref): unbiased under samples of pi, >= 0."""
    log_ratio = ref_logp - logp  # [M]
    return log_ratio.exp() - log_ratio - 1


def _kl(logp, ref_logp, kl_coef) -> torch.Tensor:
    if kl_coef == 0:
        return torch.zeros_like(logp)
    if ref_logp is None:
        raise ValueError("kl_coef > 0 needs the reference log-probs (ref_logp)")
    return kl_k3(logp, ref_logp)


def _metrics(ratio, clipped, entropy, kl) -> dict[str, torch.Tensor]:
    return {
        "token_count": torch.tensor(float(ratio.numel())),
        "clip_count": clipped.float().sum().detach(),
        "ratio_sum": ratio.sum().detach(),
        "entropy_sum": entropy.sum().detach(),
        "kl_sum": kl.sum().detach(),
    }


def qed_nano(logp, old_logp, advantages, seq, entropy, norms: StepNorms, eps: float = 4.0,
             entropy_coef: float = 1e-4, ref_logp=None, kl_coef: float = 0.0):
    """QED-Nano's objective: PPO-min surrogate with eps 4 (in practice only ratio <= 5
    binds), entropy bonus, no KL; -sum over sequences and tokens / N (samples per step)."""
    ratio = (logp - old_logp).exp()  # [M]
    obj, clipped = _ppo_objective(ratio, advantages, eps, eps)
    kl = _kl(logp, ref_logp, kl_coef)
    obj = obj + entropy_coef * entropy - kl_coef * kl  # [M]
    loss = -obj.sum() / norms.samples * norms.world_size
    return loss, _metrics(ratio, clipped, entropy, kl)


def grpo(logp, old_logp, advantages, seq, entropy, norms: StepNorms, eps: float = 0.2, entropy_coef: float = 0.0,
         ref_logp=None, kl_coef: float = 0.0):
    """GRPO: per-sequence token mean of the clipped surrogate, then mean over sequences."""
    ratio = (logp - old_logp).exp()
    obj, clipped = _ppo_objective(ratio, advantages, eps, eps)
    kl = _kl(logp, ref_logp, kl_coef)
    obj = obj + entropy_coef * entropy - kl_coef * kl  # [M]
    per_token = obj / norms.seq_lengths.to(seq.device)[seq].clamp_min(1)  # [M]: token mean inside its sequence
    loss = -per_token.sum() / norms.samples * norms.world_size
    return loss, _metrics(ratio, clipped, entropy, kl)


def dr_grpo(logp, old_logp, advantages, seq, entropy, norms: StepNorms, eps: float = 0.2, entropy_coef: float = 0.0,
         ref_logp=None, kl_coef: float = 0.0):
    """Dr. GRPO: token sum / (number of sequences x max_tokens): no length bias."""
    ratio = (logp - old_logp).exp()
    obj, clipped = _ppo_objective(ratio, advantages, eps, eps)
    kl = _kl(logp, ref_logp, kl_coef)
    obj = obj + entropy_coef * entropy - kl_coef * kl  # [M]
    loss = -obj.sum() / (norms.samples * norms.max_tokens) * norms.world_size
    return loss, _metrics(ratio, clipped, entropy, kl)


def dapo(logp, old_logp, advantages, seq, entropy, norms: StepNorms, eps_low: float = 0.2,
         eps_high: float = 0.28, entropy_coef: float = 0.0, ref_logp=None, kl_coef: float = 0.0):
    """DAPO: token-level mean over the whole step, clip-higher (eps_low 0.2, eps_high 0.28)."""
    ratio = (logp - old_logp).exp()
    obj, clipped = _ppo_objective(ratio, advantages, eps_low, eps_high)
    kl = _kl(logp, ref_logp, kl_coef)
    obj = obj + entropy_coef * entropy - kl_coef * kl  # [M]
    loss = -obj.sum() / max(norms.tokens, 1) * norms.world_size
    return loss, _metrics(ratio, clipped, entropy, kl)


def gspo(logp, old_logp, advantages, seq, entropy, norms: StepNorms, eps_low: float = 3e-4,
         eps_high: float = 4e-4, entropy_coef: float = 0.0, ref_logp=None, kl_coef: float = 0.0):
    """GSPO: one ratio per sequence, exp of the *mean* token log-ratio (not the sum),
    clipped per sequence; mean over sequences. A sequence's advantage is the token mean
    of ``advantages`` (constant inside a sequence unless a per-token weight such as the
    truncated importance weight scales it); entropy and KL enter as token means."""
    n = norms.seq_lengths.numel()
    lengths = norms.seq_lengths.to(device=logp.device, dtype=logp.dtype).clamp_min(1)  # [N]

    def seq_mean(values):  # [M] -> [N]
        return torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, seq, values.to(logp.dtype)) / lengths

    present = torch.zeros(n, dtype=torch.bool, device=logp.device).index_fill(0, seq, True)  # samples with tokens here
    ratio = seq_mean(logp - old_logp).exp()  # [N]
    obj, clipped = _ppo_objective(ratio[present], seq_mean(advantages)[present], eps_low, eps_high)  # [N']
    kl = _kl(logp, ref_logp, kl_coef)  # [M]
    obj = obj + (entropy_coef * seq_mean(entropy) - kl_coef * seq_mean(kl))[present]
    loss = -obj.sum() / norms.samples * norms.world_size
    # clip_count counts tokens, as for the token-level losses: every token of a clipped sequence
    clipped_tokens = torch.zeros(n, dtype=torch.bool, device=logp.device).masked_scatter(present, clipped)[seq]  # [M]
    return loss, _metrics((logp - old_logp).exp(), clipped_tokens, entropy, kl)


def cispo(logp, old_logp, advantages, seq, entropy, norms: StepNorms, eps_high: float = 0.28,
          entropy_coef: float = 0.0, ref_logp=None, kl_coef: float = 0.0):
    """CISPO: the importance weight min(r, 1 + eps_high) is detached and multiplies
    A * logp, so clipped tokens still get a gradient; token-level mean over the step."""
    ratio = (logp - old_logp).exp()
    weight = ratio.clamp(max=1 + eps_high).detach()  # [M]
    kl = _kl(logp, ref_logp, kl_coef)
    obj = weight * advantages * logp + entropy_coef * entropy - kl_coef * kl  # [M]
    loss = -obj.sum() / max(norms.tokens, 1) * norms.world_size
    return loss, _metrics(ratio, ratio > 1 + eps_high, entropy, kl)


POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "qed_nano": qed_nano, "grpo": grpo, "dr_grpo": dr_grpo, "dapo": dapo, "gspo": gspo, "cispo": cispo,
}


def get_policy_loss(name: str) -> PolicyLossFn:
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; valid: {sorted(POLICY_LOSSES)}") from None
