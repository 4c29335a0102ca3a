"""The typed batch one RL step trains on, and how it is built from completions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from qed_lightning.contracts import Completion, Problem, Verdict

__all__ = ["RolloutBatch", "build_rollout_batch"]


@dataclass
class RolloutBatch:
    """N = P prompts x G samples, right-padded to the longest prompt + completion.

    ``sampling_logprobs[i, t]`` is the engine's processed log-prob of token
    ``input_ids[i, t]``, set where ``completion_mask`` is 1 and 0 elsewhere, so a
    trainer's shifted log-probs line up with it directly. ``versions[i]`` is the
    weight version sample i was generated with; ``weight_version`` is the oldest
    (the only one unless the batch was built with ``mixed_versions``).
    """

    input_ids: torch.Tensor  # [N, T] long, pad = pad_id
    attention_mask: torch.Tensor  # [N, T] bool
    completion_mask: torch.Tensor  # [N, T] bool, True on completion tokens
    sampling_logprobs: torch.Tensor  # [N, T] float32
    group_ids: torch.Tensor  # [N] long, one id per prompt
    rewards: torch.Tensor  # [N] float32, score / 7
    reward_mask: torch.Tensor  # [N] bool, False where judging failed and the policy masks
    truncated: torch.Tensor  # [N] bool, hit max_tokens without EOS
    weight_version: int
    problems: list[Problem] = field(default_factory=list)  # [P]
    completions: list[Completion] = field(default_factory=list)  # [N]
    verdicts: list[Verdict] = field(default_factory=list)  # [N]
    versions: torch.Tensor | None = None  # [N] long; None only in batches saved before it existed

    @property
    def num_samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_completion_tokens(self) -> int:
        return int(self.completion_mask.sum())


def build_rollout_batch(
    problems: Sequence[Problem],
    groups: Sequence[Sequence[Completion]],
    verdicts: Sequence[Verdict],
    rewards: torch.Tensor,
    reward_mask: torch.Tensor,
    pad_id: int,
    mixed_versions: bool = False,
) -> RolloutBatch:
    """Flattens groups (prompt-major) into padded tensors; ``verdicts``/``rewards`` are flat, same order.
    Completions of several weight versions are refused unless ``mixed_versions`` (a run
    that trains on lagged batches, ``max_lag`` > 0)."""
    flat = [c for group in groups for c in group]
    if not flat:
        raise ValueError("a rollout batch needs at least one completion")
    versions = {c.weight_version for c in flat}
    if len(versions) != 1 and not mixed_versions:
        raise ValueError(f"completions of one batch come from several weight versions: {sorted(versions)}")
    width = max(len(c.prompt_ids) + len(c.completion_ids) for c in flat)
    n = len(flat)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.bool)
    completion = torch.zeros((n, width), dtype=torch.bool)
    logprobs = torch.zeros((n, width), dtype=torch.float32)
    for i, c in enumerate(flat):
        p, k = len(c.prompt_ids), len(c.completion_ids)
        input_ids[i, : p + k] = torch.tensor(c.prompt_ids + c.completion_ids, dtype=torch.long)
        attention[i, : p + k] = True
        completion[i, p : p + k] = True
        logprobs[i, p : p + k] = torch.tensor(c.logprobs, dtype=torch.float32)
    group_ids = torch.tensor([g for g, group in enumerate(groups) for _ in group], dtype=torch.long)
    return RolloutBatch(
        input_ids=input_ids, attention_mask=attention, completion_mask=completion, sampling_logprobs=logprobs,
        group_ids=group_ids, rewards=rewards.float(), reward_mask=reward_mask.bool(),
        truncated=torch.tensor([c.truncated for c in flat], dtype=torch.bool), weight_version=min(versions),
        problems=list(problems), completions=flat, verdicts=list(verdicts),
        versions=torch.tensor([c.weight_version for c in flat], dtype=torch.long),
    )
