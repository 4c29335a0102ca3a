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

With ``background`` (engines that run elsewhere: ``vllm serve`` processes on other
GPUs or nodes), the batches ahead are generated in a background thread instead of
inside the step, so batch t+k generates while the trainer trains on batch t. The
schedule, and so every sample, stamp and weight, is the same as without it; only the
waiting moves. The trainer calls :meth:`drain` before each push: it waits until no
request of this rank runs (a push lands between batches, never into a running
request; under DDP the ranks then meet at a barrier before rank 0 pushes). The next
batch is launched only after the push, in the next step's :meth:`take`.
"""
from __future__ import annotations

import concurrent.futures
import logging
import time
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
    requested: list[str]  # problem ids, known before the batch is generated
    produced: Future  # -> (SampledGroups, refused samples, grading Future -> (RolloutBatch, metrics))
    from_saved: bool = False


class LaggedRollouts:
    """Checkpoint component and scheduler of a lagged run.

    Args:
        producer: The run's rollout producer (generation and grading in parts).
        max_lag: k >= 1: batches generated ahead of their step.
        background: Generate the batches ahead in a background thread (engines that
            run elsewhere; a colocated engine shares the trainer's device).
    """

    def __init__(self, producer: RolloutProducer, max_lag: int, background: bool = False) -> None:
        if max_lag < 1:
            raise ValueError(f"LaggedRollouts needs max_lag >= 1, got {max_lag}")
        self.producer, self.max_lag, self.background = producer, max_lag, background
        self._flights: dict[int, _Flight] = {}
        self._saved: dict | None = None  # a checkpoint's in-flight shares, until the first take
        self._grading_pool: ThreadPoolExecutor | None = None
        self._generation_pool: ThreadPoolExecutor | None = None  # background only

    @property
    def in_flight(self) -> list[int]:
        return sorted(self._flights)

    def take(self, step: int, problems: Sequence[Problem], problems_of: Callable[[int], list[Problem]],
             last_step: int | None, rank: int = 0, world_size: int = 1) -> tuple[RolloutBatch, dict, bool]:
        """Batch ``step`` (this rank's ``problems``), its metrics, and whether it came from
        a checkpoint; launches the batches ahead first. ``problems_of(s)``: this rank's
        problems of step s; ``last_step``: the run's last step (None: unbounded)."""
        self._restore(problems_of, rank, world_size)
        self._raise_failed()
        ids = [p.id for p in problems]
        if step in self._flights and self._flights[step].requested != ids:
            raise LaggedRolloutsError(f"step {step}: the batch generated ahead was for problems "
                                      f"{self._flights[step].requested}, the data gives {ids}")
        stale = [s for s in self._flights if s < step]
        if stale:
            raise LaggedRolloutsError(f"step {step}: batches of earlier steps {stale} are still in flight")
        if step not in self._flights:  # first step, or resumed without it: on-policy now
            self._flights[step] = self._launch(list(problems), step)
        ahead = step + self.max_lag if last_step is None else min(step + self.max_lag, last_step)
        for s in range(step + 1, ahead + 1):
            if s not in self._flights:
                self._flights[s] = self._launch(problems_of(s), s)
        start = time.perf_counter()
        flight = self._flights.pop(step)
        _, refused, grading = flight.produced.result()
        batch, metrics = grading.result()
        metrics = {**metrics, **lag_metrics(batch.versions, step), "rollout/too_old_samples": float(refused),
                   "rollout/wait_s": time.perf_counter() - start}
        if self.producer.recorder is not None:
            self.producer.recorder.write(step, batch)
        return batch, metrics, flight.from_saved

    def _launch(self, problems: list[Problem], step: int) -> _Flight:
        ids = [p.id for p in problems]
        if not self.background:
            done: Future = Future()
            done.set_result(self._produce(problems, step))  # errors raise here, in the step
            return _Flight(ids, done)
        if self._generation_pool is None:
            self._generation_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qed-lagged-generation")
        return _Flight(ids, self._generation_pool.submit(self._produce, problems, step))

    def _produce(self, problems: list[Problem], step: int):
        """Generates ``step``'s batch (stamps checked against the lag bound instead of one
        version) and hands it to the grading thread."""
        sampled = self.producer.sample(problems, step)
        refused = refuse_stale_groups(sampled, self.max_lag)
        if refused:
            log.warning("step %d: refused %d sample(s) whose weight version is outside the lag bound %d",
                        step, refused, self.max_lag)
        if self._grading_pool is None:
            self._grading_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qed-lagged-grading")
        return sampled, refused, self._grading_pool.submit(self.producer.grade_sampled, sampled)

    def _raise_failed(self) -> None:
        """A batch whose background generation failed fails the step that comes after it
        (not only the step that would train on it, up to k steps later)."""
        for step, flight in sorted(self._flights.items()):
            if flight.produced.done() and flight.produced.exception() is not None:
                raise LaggedRolloutsError(f"generating step {step}'s batch in the background failed: "
                                          f"{flight.produced.exception()}") from flight.produced.exception()

    def drain(self) -> float:
        """Waits until every batch in flight is generated (no request of this rank runs
        on the engine); returns the seconds waited. Errors stay with their batch."""
        start = time.perf_counter()
        concurrent.futures.wait([f.produced for f in self._flights.values()])
        return time.perf_counter() - start

    def wait(self) -> None:
        """Every batch in flight generated and graded (errors raised)."""
        for flight in self._flights.values():
            flight.produced.result()[2].result()

    def close(self) -> None:
        for pool in (self._generation_pool, self._grading_pool):  # generation first: it feeds the grading
            if pool is not None:
                pool.shutdown(wait=True)
        self._generation_pool = self._grading_pool = None

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Every rank's batches in flight, graded (called on every rank: Lightning builds
        the checkpoint on each and rank 0 writes it)."""
        if self._saved is not None:  # restored, not taken yet (every rank holds all shares)
            return dict(self._saved)
        self.wait()
        mine = {str(s): sampled_to_plain(*f.produced.result()[:2]) for s, f in sorted(self._flights.items())}
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
            graded: Future = Future()
            graded.set_result(self.producer.grade_sampled(sampled))  # graded before the save: no judge call
            produced: Future = Future()
            produced.set_result((sampled, refused, graded))
            self._flights[int(key)] = _Flight(list(sampled.requested), produced, from_saved=True)


def _gather(mine: dict) -> list[dict]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, mine)
    return shares
