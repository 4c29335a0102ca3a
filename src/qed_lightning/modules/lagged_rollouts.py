"""Rollouts generated up to ``max_lag`` steps ahead of the step that trains on them.

With ``max_lag`` k the RL step t, on every rank:

1. takes batch t if it is in flight (else, at the first step or after a resume from a
   checkpoint without it, generates it now with the current weights: lag 0);
2. generates the batches t+1 .. t+k not yet in flight with the weights it holds
   (version t; each sample seeded as an on-policy run would seed it at that step), and
   hands each to the judge in a background thread; batches past the run's last step
   are never generated, so a run with ``max_steps`` <= k simply has nothing ahead;
3. waits for batch t's verdicts: the judge graded them while batch t+1 generated (and,
   before that, while step t-1 trained).

So a sample trained at step t was generated with version t-k (t at the warm-up's
first steps); the stamps, not a counter, give ``rollout/lag_*``, and a group whose
stamp is outside 0..k is refused and counted (``rollout/too_old_samples``). With one
colocated engine generation cannot overlap training (they share the device and the
engine sleeps while the trainer trains); what this hides is the judge's time, behind
generation and training.

Checkpoints hold every batch in flight, graded (a save waits for the judge), one share
per rank; a resumed run trains on them instead of generating them again (it could not:
the weights that sampled them are gone), so exact resume holds as it does on-policy.
A preemption signal is acted on at the step boundary.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from qed_lightning.contracts import Problem
from qed_lightning.rollouts.batch import RolloutBatch
from qed_lightning.rollouts.lagged import lag_metrics, refuse_stale_groups, sampled_from_plain, sampled_to_plain
from qed_lightning.rollouts.producer import RolloutProducer, SampledGroups

__all__ = ["LaggedRollouts", "LaggedRolloutsError"]

log = logging.getLogger(__name__)


class LaggedRolloutsError(RuntimeError):
    pass


@dataclass
class _Flight:
    sampled: SampledGroups
    grading: Future  # -> (RolloutBatch, metrics)
    refused: int
    from_saved: bool = False


class LaggedRollouts:
    """Checkpoint component and scheduler of a lagged run.

    Args:
        producer: The run's rollout producer (generation and grading in parts).
        max_lag: k >= 1: batches generated ahead of their step.
    """

    def __init__(self, producer: RolloutProducer, max_lag: int) -> None:
        if max_lag < 1:
            raise ValueError(f"LaggedRollouts needs max_lag >= 1, got {max_lag}")
        self.producer, self.max_lag = producer, max_lag
        self._flights: dict[int, _Flight] = {}
        self._saved: dict | None = None  # a checkpoint's in-flight shares, until the first take
        self._pool: ThreadPoolExecutor | None = None

    @property
    def in_flight(self) -> list[int]:
        return sorted(self._flights)

    def take(self, step: int, problems: Sequence[Problem], problems_of: Callable[[int], list[Problem]],
             last_step: int | None, rank: int = 0, world_size: int = 1) -> tuple[RolloutBatch, dict, bool]:
        """Batch ``step`` (this rank's ``problems``), its metrics, and whether it came from
        a checkpoint; launches the batches ahead first. ``problems_of(s)``: this rank's
        problems of step s; ``last_step``: the run's last step (None: unbounded)."""
        self._restore(problems_of, rank, world_size)
        ids = [p.id for p in problems]
        if step in self._flights and self._flights[step].sampled.requested != ids:
            raise LaggedRolloutsError(f"step {step}: the batch generated ahead was for problems "
                                      f"{self._flights[step].sampled.requested}, the data gives {ids}")
        stale = [s for s in self._flights if s < step]
        if stale:
            raise LaggedRolloutsError(f"step {step}: batches of earlier steps {stale} are still in flight")
        if step not in self._flights:  # first step, or resumed without it: on-policy now
            self._flights[step] = self._launch(list(problems), step)
        ahead = step + self.max_lag if last_step is None else min(step + self.max_lag, last_step)
        for s in range(step + 1, ahead + 1):
            if s not in self._flights:
                self._flights[s] = self._launch(problems_of(s), s)
        flight = self._flights.pop(step)
        batch, metrics = flight.grading.result()
        metrics = {**metrics, **lag_metrics(batch.versions, step), "rollout/too_old_samples": float(flight.refused)}
        if self.producer.recorder is not None:
            self.producer.recorder.write(step, batch)
        return batch, metrics, flight.from_saved

    def _launch(self, problems: list[Problem], step: int) -> _Flight:
        sampled = self.producer.sample(problems, step)  # stamps are checked against the lag bound instead
        refused = refuse_stale_groups(sampled, self.max_lag)
        if refused:
            log.warning("step %d: refused %d sample(s) whose weight version is outside the lag bound %d",
                        step, refused, self.max_lag)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qed-lagged-grading")
        return _Flight(sampled, self._pool.submit(self.producer.grade_sampled, sampled), refused)

    def wait(self) -> None:
        """Every batch in flight graded (errors raised)."""
        for flight in self._flights.values():
            flight.grading.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Every rank's batches in flight, graded (called on every rank: Lightning builds
        the checkpoint on each and rank 0 writes it)."""
        if self._saved is not None:  # restored, not taken yet (every rank holds all shares)
            return dict(self._saved)
        self.wait()
        mine = {str(s): sampled_to_plain(f.sampled, f.refused) for s, f in sorted(self._flights.items())}
        return {"max_lag": self.max_lag, "shares": _gather(mine)}

    def load_state_dict(self, state: dict) -> None:
        self._flights = {}
        self._saved = dict(state) if any(state.get("shares") or []) else None

    def _restore(self, problems_of: Callable[[int], list[Problem]], rank: int, world_size: int) -> None:
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        if len(saved["shares"]) != world_size:
            raise LaggedRolloutsError(f"the checkpoint holds batches in flight from {len(saved['shares'])} ranks; "
                                      f"resume it with {len(saved['shares'])} ranks, not {world_size}")
        for key, data in saved["shares"][rank].items():
            sampled, refused = sampled_from_plain(data, problems_of(int(key)))
            refused += refuse_stale_groups(sampled, self.max_lag)  # a resume with a smaller max_lag
            done: Future = Future()
            done.set_result(self.producer.grade_sampled(sampled))  # graded before the save: no judge call
            self._flights[int(key)] = _Flight(sampled, done, refused, from_saved=True)


def _gather(mine: dict) -> list[dict]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, mine)
    return shares
