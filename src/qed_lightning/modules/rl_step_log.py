"""Logging one RL step's metrics, reduced over ranks the way each kind needs."""
from __future__ import annotations

from qed_lightning.loggers.rollout_table import log_rollout_table
from qed_lightning.modules.collective_steps import same_keys_on_every_rank
from qed_lightning.modules.rl_metrics import step_metrics
from qed_lightning.rollouts.lagged import lag_metrics

__all__ = ["COUNT_METRICS", "log_rl_step"]

# Counts add up over ranks; every other metric is a per-rank mean (or a max or min).
COUNT_METRICS = frozenset({"train/kept_samples", "rollout/completion_tokens", "rollout/skipped_long_prompts",
                           "rollout/too_old_samples", "rollout/engine_retries"})


def log_rl_step(module, step, from_saved, rollouts, adv, keep, totals, grad_norm, ok, lr, seconds) -> None:
    """Logs the step's metrics through ``module`` (a ``GRPOModule``), and the rollout
    table of a recorded step on rank 0."""
    metrics = step_metrics(rollouts, adv, keep, totals, grad_norm, ok, lr, seconds)
    if rollouts.versions is not None:
        metrics.update(lag_metrics(rollouts.versions, step))
    metrics.update(module.producer.last_metrics)
    metrics["rollout/from_saved"] = float(from_saved)  # 1: trained on rollouts saved at a preemption
    metrics.update(getattr(module.engine, "last_sync", {}))
    if hasattr(module.engine, "retries"):  # a served engine's requests retried so far (each rank's client)
        metrics["rollout/engine_retries"] = float(module.engine.retries)
    # Under DDP each rank holds equal shares of the step (whole groups, same n):
    # the mean over ranks of a rank's mean is the step's mean; maxima take the max.
    sync = module.trainer.world_size > 1
    if sync:
        metrics = same_keys_on_every_rank(metrics)
    maxima = {k: v for k, v in metrics.items() if k.endswith("_max")}
    minima = {k: v for k, v in metrics.items() if k.endswith("_min")}
    counts = {k: v for k, v in metrics.items() if k in COUNT_METRICS}
    means = {k: v for k, v in metrics.items() if k not in maxima and k not in minima and k not in counts}
    for group, fx in ((means, "mean"), (maxima, "max"), (minima, "min"), (counts, "sum")):
        module.log_dict(group, on_step=True, on_epoch=False, batch_size=rollouts.num_samples, sync_dist=sync,
                        reduce_fx=fx)
    module.log("reward", metrics["reward/mean"], prog_bar=True, logger=False, batch_size=rollouts.num_samples)
    recorded = module._recorder.last_rows if module._recorder is not None else None
    if module.global_rank == 0 and recorded is not None and recorded[0] == step:
        log_rollout_table(module.loggers, step, recorded[1])
