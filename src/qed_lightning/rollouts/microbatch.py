"""Packing a RolloutBatch into micro-batches for the policy update.

Samples that count (weight > 0) are packed whole into rows of at most
``micro_batch_tokens`` tokens (first-fit decreasing), with position ids restarting
at every sample so attention stays inside a sample (see ``data/packing.py``). For
each counted completion token the micro-batch records where its *predicting* hidden
state sits (position p-1 predicts token p), its sampling log-prob, its sample's
advantage and its sample index: exactly the flat inputs the policy losses take.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from qed_lightning.rollouts.batch import RolloutBatch

__all__ = ["RLMicroBatch", "pack_rollouts"]


@dataclass
class RLMicroBatch:
    input_ids: torch.Tensor  # [R, L] long
    position_ids: torch.Tensor  # [R, L] long, restart at 0 per sample
    predict_at: torch.Tensor  # [M] long: flat index (row * L + pos) of the hidden that predicts the target
    targets: torch.Tensor  # [M] long
    old_logp: torch.Tensor  # [M] float32, the engine's sampling log-probs
    advantages: torch.Tensor  # [M] float32
    seq: torch.Tensor  # [M] long, sample index in the RolloutBatch

    def model_kwargs(self) -> dict[str, Any]:
        # use_cache=False: with a cache transformers would not split packed samples
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False}

    @property
    def num_tokens(self) -> int:
        return int(self.targets.numel())


def pack_rollouts(batch: RolloutBatch, advantages: torch.Tensor, keep: torch.Tensor, micro_batch_tokens: int,
                  pad_id: int) -> list[RLMicroBatch]:
    """Micro-batches over the kept samples (``keep`` [N] bool; ``advantages`` [N])."""
    lengths = batch.attention_mask.sum(1)  # [N]
    samples = [i for i in range(batch.num_samples) if keep[i] and batch.completion_mask[i].any()]
    for i in samples:
        if int(lengths[i]) > micro_batch_tokens:
            raise ValueError(f"sample {i} ({batch.problems[int(batch.group_ids[i])].id!r}) has {int(lengths[i])} "
                             f"tokens > micro_batch_tokens={micro_batch_tokens}; raise micro_batch_tokens to at "
                             "least the longest prompt + max_tokens")
    order = sorted(samples, key=lambda i: -int(lengths[i]))  # stable: ties keep sample order
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = int(lengths[i])
        slot = next((b for b, free in enumerate(room) if free >= n), None)
        if slot is None:
            bins.append([])
            room.append(micro_batch_tokens)
            slot = len(bins) - 1
        bins[slot].append(i)
        room[slot] -= n
    return [_collate(batch, advantages, b, pad_id) for b in bins]


def _collate(batch: RolloutBatch, advantages: torch.Tensor, rows_of_samples: list[int], pad_id: int) -> RLMicroBatch:
    width = sum(int(batch.attention_mask[i].sum()) for i in rows_of_samples)
    ids = torch.full((1, width), pad_id, dtype=torch.long)
    pos = torch.zeros((1, width), dtype=torch.long)
    predict_at, targets, old, adv, seq = [], [], [], [], []
    offset = 0
    for i in rows_of_samples:
        n = int(batch.attention_mask[i].sum())
        ids[0, offset:offset + n] = batch.input_ids[i, :n]
        pos[0, offset:offset + n] = torch.arange(n)
        where = batch.completion_mask[i, :n].nonzero().squeeze(1)  # [K] completion positions (>= 1)
        predict_at.append(offset + where - 1)
        targets.append(batch.input_ids[i, where])
        old.append(batch.sampling_logprobs[i, where])
        adv.append(advantages[i].expand(where.numel()))
        seq.append(torch.full((where.numel(),), i, dtype=torch.long))
        offset += n
    return RLMicroBatch(ids, pos, torch.cat(predict_at), torch.cat(targets), torch.cat(old).float(),
                        torch.cat(adv).float(), torch.cat(seq))
