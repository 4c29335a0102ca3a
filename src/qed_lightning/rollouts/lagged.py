"""Pieces of lagged (off-policy by a bounded number of versions) rollouts.

A sample's lag is the training step it is trained at minus the weight version that
generated it (its ``Completion.weight_version`` stamp, never a counter). A run with
``max_lag`` k trains a sample only when 0 <= lag <= k; any other stamp (a server that
missed a push, one reloaded by someone else, ``UNKNOWN_VERSION``) is refused and
counted, by whole groups, since a group's baseline needs all of its samples.
Generated groups waiting to be trained are saved in checkpoints as plain data, so a
checkpoint still loads with ``weights_only=True``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import torch

from qed_lightning.contracts import Completion, Problem, Verdict
from qed_lightning.rollouts.producer import SampledGroups, StaleRolloutError

__all__ = ["lag_metrics", "refuse_stale_groups", "sampled_from_plain", "sampled_to_plain"]


def lag_metrics(versions: torch.Tensor, step: int) -> dict[str, float]:
    """``rollout/lag_{min,mean,max}`` of a batch trained at ``step`` from its per-sample
    versions ``[N]``."""
    lags = (step - versions).double()  # [N]
    return {"rollout/lag_min": float(lags.min()), "rollout/lag_mean": float(lags.mean()),
            "rollout/lag_max": float(lags.max())}


def refuse_stale_groups(sampled: SampledGroups, max_lag: int) -> int:
    """Drops, in place, every group of ``sampled`` holding a sample whose lag at
    ``sampled.step`` is outside 0..``max_lag``; returns the number of samples dropped.
    Raises ``StaleRolloutError`` when no group is left."""
    # a negative stamp is no version (UNKNOWN_VERSION): its lag would look small
    keep = [all(c.weight_version >= 0 and 0 <= sampled.step - c.weight_version <= max_lag for c in group)
            for group in sampled.groups]
    if all(keep):
        return 0
    dropped = sum(len(g) for g, k in zip(sampled.groups, keep) if not k)
    if not any(keep):
        versions = sorted({c.weight_version for g in sampled.groups for c in g})
        raise StaleRolloutError(f"step {sampled.step}: every completion's weight version {versions} is outside the "
                                f"allowed lag 0..{max_lag} (a server that missed a weight push?)")
    if sampled.verdicts is not None:  # flat, group-major
        starts = [0]
        for group in sampled.groups:
            starts.append(starts[-1] + len(group))
        sampled.verdicts = [v for i, k in enumerate(keep) if k for v in sampled.verdicts[starts[i]:starts[i + 1]]]
    sampled.kept = [p for p, k in zip(sampled.kept, keep) if k]
    sampled.groups = [g for g, k in zip(sampled.groups, keep) if k]
    return dropped


def sampled_to_plain(sampled: SampledGroups, refused: int) -> dict:
    """Plain Python data of graded groups (problems by id: the run's data has them)."""
    if sampled.verdicts is None:
        raise ValueError(f"step {sampled.step}: groups are saved graded (wait for their grading first)")
    return {"step": sampled.step, "requested": list(sampled.requested), "kept": [p.id for p in sampled.kept],
            "groups": [[asdict(c) for c in group] for group in sampled.groups],
            "verdicts": [asdict(v) for v in sampled.verdicts], "skipped": sampled.skipped, "gen_s": sampled.gen_s,
            "judge_s": sampled.judge_s, "refused": refused}


def sampled_from_plain(data: dict, problems: Sequence[Problem]) -> tuple[SampledGroups, int]:
    """Inverse of :func:`sampled_to_plain`; ``problems`` are the step's problems, in the
    order the run asks for them, which must be the saved ones."""
    ids = [p.id for p in problems]
    if ids != data["requested"]:
        raise ValueError(f"step {data['step']}: the checkpoint's in-flight groups were sampled for problems "
                         f"{data['requested']}, but the data gives {ids} for that step (another data order or seed?)")
    by_id = {p.id: p for p in problems}
    sampled = SampledGroups(
        step=data["step"], requested=list(data["requested"]), kept=[by_id[i] for i in data["kept"]],
        groups=[[Completion(**c) for c in group] for group in data["groups"]], skipped=data["skipped"],
        gen_s=data["gen_s"], verdicts=[Verdict(**v) for v in data["verdicts"]], judge_s=data["judge_s"])
    return sampled, int(data["refused"])
