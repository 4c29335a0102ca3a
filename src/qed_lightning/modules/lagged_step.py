"""The rollout phase of a lagged RL step (``max_lag`` > 0): take this step's batch and
launch the batches ahead (``modules/lagged_rollouts.py``), failing on every rank
together, as ``step_rollouts`` does for an on-policy step."""
from __future__ import annotations

from qed_lightning.modules.lag_settings import problems_ahead
from qed_lightning.modules.rank_failures import agree_on_failure

__all__ = ["take_lagged_batch"]


def take_lagged_batch(module, problems, step: int):
    """(batch ``step``, whether it came from a checkpoint) for ``module`` (a ``GRPOModule``
    with ``lagged`` set); its metrics become the producer's ``last_metrics``."""
    if module.pending_rollouts.step is not None:
        raise ValueError(f"the checkpoint holds step {module.pending_rollouts.step}'s rollouts saved by an "
                         "on-policy run's preemption: resume it with max_lag 0")
    trainer = module.trainer
    last = trainer.max_steps - 1 if trainer.max_steps is not None and trainer.max_steps > 0 else None
    batch, metrics, from_saved = agree_on_failure(
        lambda: module.lagged.take(step, problems, lambda s: problems_ahead(trainer, s), last,
                                   trainer.global_rank, trainer.world_size), f"step {step}: lagged rollouts")
    module.producer.last_metrics = metrics
    return batch, from_saved
