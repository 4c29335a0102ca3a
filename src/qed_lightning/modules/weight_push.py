"""The RL step's last phase: the trainer's new weights into the rollout engine."""
from __future__ import annotations

import time

from qed_lightning.engines.full_weights import full_weights_for_push
from qed_lightning.modules.collective_steps import push_from_rank_zero

__all__ = ["drain_before_push", "push_weights"]


def push_weights(module) -> None:
    """Every rank's engine gets ``module``'s full policy weights, stamped with the global
    step. Under FSDP they are gathered one unit at a time (every rank takes part in each
    gather); a served engine is shared by all ranks, so rank 0 pushes once and the others
    wait."""
    engine, trainer = module.engine, module.trainer
    engine.wake_up(["weights"])
    weights = full_weights_for_push(module.policy)
    if getattr(engine, "shared_by_ranks", False) and trainer.world_size > 1:
        strategy = trainer.strategy
        push_from_rank_zero(weights, lambda w: engine.load_weights(w, version=module.global_step),
                            module.global_rank == 0, lambda flag: strategy.reduce_boolean_decision(flag, all=False))
    else:
        engine.load_weights(weights, version=module.global_step)
    engine.wake_up(["kv_cache"])


def drain_before_push(module) -> float:
    """With background generation, waits until the batches ahead have finished
    generating, so a push never lands while a request runs, on any rank (the servers are
    shared: the ranks meet at a barrier before rank 0 pushes). Returns the seconds waited."""
    lagged = module.lagged
    if lagged is None or not lagged.background:
        return 0.0
    start = time.perf_counter()
    lagged.drain()
    if module.trainer.world_size > 1:
        module.trainer.strategy.barrier("qed_lightning.drained")
    return time.perf_counter() - start
