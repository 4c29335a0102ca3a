"""The metrics of one RL step, from its rollouts and the sums its micro-batches added up."""
from __future__ import annotations

import torch

from qed_lightning.rollouts.batch import RolloutBatch

__all__ = ["importance_metrics", "step_metrics"]


def step_metrics(rollouts: RolloutBatch, adv: torch.Tensor, keep: torch.Tensor, totals: dict[str, float],
                 grad_norm: float, ok: bool, lr: float, seconds: dict[str, float]) -> dict[str, float]:
    """``totals`` holds the step's sums (loss, token_count, clip_count, entropy_sum,
    ratio_sum, kl_sum, gap_sum) and gap_max; per-token means divide by token_count.
    ``train/clip_fraction`` is the share of the step's counted tokens whose clip is active
    (for GSPO, the tokens of clipped sequences: clip_count counts tokens for every loss)."""
    scores = torch.tensor([v.score if v.score is not None else -1 for v in rollouts.verdicts])  # [N], -1: failed
    lengths = rollouts.completion_mask.sum(1).float()  # [N]
    tokens = max(totals["token_count"], 1.0)
    return {
        "train/loss": totals["loss"], "train/grad_norm": float(grad_norm), "train/lr": lr,
        "train/skipped": float(not ok), "train/kept_samples": float(keep.sum()),
        "train/clip_fraction": totals["clip_count"] / tokens, "train/entropy": totals["entropy_sum"] / tokens,
        "train/ratio_mean": totals["ratio_sum"] / tokens, "train/kl": totals["kl_sum"] / tokens,
        "train/advantage_abs_mean": float(adv.abs().mean()),
        "rollout/logprob_gap_mean": totals["gap_sum"] / tokens, "rollout/logprob_gap_max": totals["gap_max"],
        "reward/mean": float(rollouts.rewards.mean()), "reward/std": float(rollouts.rewards.std(unbiased=False)),
        "reward/success_rate": float((scores == 7).float().mean()),
        "rollout/completion_tokens_mean": float(lengths.mean()), "rollout/completion_tokens_max": float(lengths.max()),
        "time/rollout_s": seconds["rollout"], "time/train_s": seconds["train"], "time/sync_s": seconds["sync"],
        "time/drain_s": seconds["drain"],
        "time/train_tokens_per_s": totals["token_count"] / max(seconds["train"], 1e-9),
        **importance_metrics(totals),
    }


def importance_metrics(totals: dict[str, float]) -> dict[str, float]:
    """The importance weights w = pi_trainer / pi_engine of the step's tokens (before any
    cap): their mean and max, and the effective sample size (sum w)^2 / sum w^2, also
    as a share of the tokens (1: every weight equal)."""
    if "is_sum" not in totals:
        return {}
    ess = totals["is_sum"] ** 2 / totals["is_sq_sum"] if totals["is_sq_sum"] > 0 else 0.0
    tokens = max(totals["token_count"], 1.0)
    return {"train/is_weight_mean": totals["is_sum"] / tokens, "train/is_weight_max": totals["is_max"],
            "train/is_ess": ess, "train/is_ess_fraction": ess / tokens}
