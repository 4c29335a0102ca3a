"""``ReasoningCacheCallback``: the optional pool of reasoning-cache states.

By default RC training builds each step's (problem, summary) states inside the step,
on the rollout path, because they are what the step trains on. This callback is the
speed option: every ``refresh_every_n_steps`` steps it builds the states of the
problems of that many coming steps in one batched pass with the current policy, and
the producer serves them until the next refresh (states at most k - 1 updates old).
Its pool is part of the callback's checkpoint state.
"""
from __future__ import annotations

import lightning.pytorch as pl

from qed_lightning.reasoning_cache.pool import StatePool
from qed_lightning.reasoning_cache.producer import ReasoningCacheProducer
from qed_lightning.rollouts.datamodule import problems_for_step

__all__ = ["ReasoningCacheCallback"]


class ReasoningCacheCallback(pl.Callback):
    """Args:
        refresh_every_n_steps: k: the pool is rebuilt every k steps for the next k steps'
            problems (and at any step whose problems it does not hold).
    """

    def __init__(self, refresh_every_n_steps: int = 4) -> None:
        if refresh_every_n_steps < 1:
            raise ValueError(f"refresh_every_n_steps must be >= 1, got {refresh_every_n_steps}")
        self.refresh_every_n_steps = refresh_every_n_steps
        self.pool = StatePool()
        self.refreshed_at: list[int] = []

    def _producer(self, pl_module) -> ReasoningCacheProducer:
        producer = getattr(pl_module, "producer", None)
        if not isinstance(producer, ReasoningCacheProducer):
            raise ValueError("ReasoningCacheCallback needs an RL module with reasoning_cache settings "
                             "(model.reasoning_cache in the config)")
        return producer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._producer(pl_module).pool = self.pool

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step, k = trainer.global_step, self.refresh_every_n_steps
        if step % k and all(self.pool.get(p.id) is not None for p in batch):
            return
        dm = trainer.datamodule
        rank, world = dm.rank_and_world()
        coming: dict[str, object] = {p.id: p for p in batch}
        for s in range(step + 1, step + k):
            for p in problems_for_step(dm.problems, s, dm.prompts_per_step, dm.seed)[rank::world]:
                coming.setdefault(p.id, p)
        self._producer(pl_module).refresh_pool(list(coming.values()), step)
        self.refreshed_at.append(step)

    def state_dict(self) -> dict:
        return {"pool": self.pool.state_dict(), "refreshed_at": list(self.refreshed_at)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.pool.load_state_dict(state_dict.get("pool", {}))
        self.refreshed_at = list(state_dict.get("refreshed_at", []))
