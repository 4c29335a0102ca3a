"""Per-token log-probs and entropy of chosen tokens, without ``[N, V]`` logits alive.

RL needs log pi(token) under the *sampling* distribution, so logits are divided by
the sampling temperature (the engine's processed log-probs are computed the same
way), and the entropy of that distribution for the entropy bonus. Rows are processed
in chunks under activation checkpointing: each chunk's ``[C, V]`` logits exist only
while that chunk's forward or backward runs.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["token_logprobs_and_entropy"]


def _chunk(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float):
    # projection in the input dtype, softmax math in at least fp32
    logits = (hidden @ weight.t()).to(torch.promote_types(hidden.dtype, torch.float32)) / temperature  # [C, V]
    lse = logits.logsumexp(-1)  # [C]
    logp = logits.gather(-1, targets[:, None])[:, 0] - lse  # [C]
    probs = (logits - lse[:, None]).exp()  # [C, V]
    entropy = lse - (probs * logits).sum(-1)  # [C]: H = lse - E_p[z]
    return logp, entropy


def token_logprobs_and_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Args:
        hidden: [M, H] final hidden states at the positions that predict ``targets``.
        weight: [V, H] LM head.
        targets: [M] token ids.
        temperature: Sampling temperature (> 0).

    Returns:
        ``(logp [M], entropy [M])`` in fp32, differentiable w.r.t. ``hidden`` and ``weight``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32) + 0 * weight.sum()  # [0], still in the graph
        return empty, empty.clone()
    logps, entropies = [], []
    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    for start in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if grad:
            lp, ent = checkpoint(_chunk, h, weight, t, temperature, use_reentrant=False)
        else:
            lp, ent = _chunk(h, weight, t, temperature)
        logps.append(lp)
        entropies.append(ent)
    return torch.cat(logps), torch.cat(entropies)
