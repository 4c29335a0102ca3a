"""A causal LM whose forward returns the summed token loss instead of logits.

The LM head is applied inside the loss in chunks, so ``[B, T, V]`` logits never
exist for backward; and because it runs inside ``forward`` of a module that owns the
policy, a sharding wrapper (FSDP) has gathered the head's weight when it is used."""
from __future__ import annotations

import inspect
from functools import partial

import torch
from torch import nn

from qed_lightning.data.packing import PackedBatch
from qed_lightning.losses import get_sft_loss
from qed_lightning.modules.collective_steps import zero_loss

IGNORE_INDEX = -100


class CausalLMWithLoss(nn.Module):
    def __init__(self, policy: nn.Module, loss: str, chunk_size: int = 256) -> None:
        super().__init__()
        self.policy = policy
        fn = get_sft_loss(loss)
        if "chunk_size" in inspect.signature(fn).parameters:
            fn = partial(fn, chunk_size=chunk_size)
        self.loss_fn = fn
        self.loss_name = loss

    def forward(self, batch: PackedBatch | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (sum of token losses, number of target tokens) for one micro-batch;
        ``None`` runs a zero-loss pass (``collective_steps.zero_loss``) instead."""
        if batch is None:
            return zero_loss(self.policy), torch.zeros((), dtype=torch.long)
        hidden = self.policy.base_model(**batch.model_kwargs()).last_hidden_state  # [B, T, H]
        targets = batch.labels[:, 1:]  # [B, T-1]: token t+1 is predicted at position t
        keep = targets != IGNORE_INDEX  # [B, T-1]
        hidden = hidden[:, :-1][keep]  # [N, H]
        head = self.policy.get_output_embeddings()
        return self.loss_fn(hidden, head.weight, targets[keep], bias=head.bias)
