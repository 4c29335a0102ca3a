"""A failure on one rank stops every rank with the same error (2 gloo ranks, CPU).

A step's rollouts run on each rank alone (its own engine and judge calls); the ranks
meet in collectives only between generation parts (the preemption check) and after the
rollouts. A rank that raised used to leave the others waiting in their next collective
until the process-group timeout. Here a fault is injected on one rank (a judge that is
down, completions from stale weights, every prompt too long, a failed refresh of the
reasoning cache, a rank's rollouts not saved for a preemption); both ranks must raise
the same error, of the failed rank's type, naming it, at the next point the ranks
meet, and their collectives must still be in step afterwards. The process group's
timeout is short, so a regression fails in seconds instead of hanging."""
from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from qed_lightning.callbacks.preemption import PreemptionCallback
from qed_lightning.contracts import Completion, Problem, SamplingSettings, Verdict
from qed_lightning.judging.base import BaseJudge, JudgeUnavailableError
from qed_lightning.modules.preemptible_rollouts import step_rollouts
from qed_lightning.preemption.signals import preemption_request
from qed_lightning.reasoning_cache.pool import StatePool
from qed_lightning.reasoning_cache.producer import ReasoningCacheProducer, ReasoningCacheSettings
from qed_lightning.rollouts.pending import PendingRollouts
from qed_lightning.rollouts.producer import RolloutProducer, StaleRolloutError

from .spawn import run_on_ranks

PROBLEMS = [Problem(f"p{i}", f"Problem number {i}.", rubric=f"rubric {i}") for i in range(8)]


class Engine:
    """Answers each prompt with a short proof; counts its calls. ``stale_on_call``: the
    completions of that call carry another weight version (a missed push)."""

    def __init__(self, tokenizer, max_model_len: int = 4096, stale_on_call: int | None = None,
                 broken: bool = False) -> None:
        self.tokenizer, self.max_model_len = tokenizer, max_model_len
        self.stale_on_call, self.broken = stale_on_call, broken
        self.calls = 0

    def generate(self, prompts, sampling, sample_seeds=None, regex=None):
        self.calls += 1
        if self.broken:
            raise ConnectionError("engine went away")
        version = 99 if self.calls == self.stale_on_call else 0
        ids = self.tokenizer("<think>idea</think>proof eee", add_special_tokens=False).input_ids
        return [[Completion(list(p), ids, [-0.5] * len(ids), "stop", "<think>idea</think>proof eee", version)
                 for _ in range(sampling.n)] for p in prompts]


class Judge(BaseJudge):
    """A grader that answers, or (``down``) fails every call as a server that is down
    does; one such batch stops the run (``max_failed_batches=1``)."""

    def __init__(self, down: bool = False) -> None:
        super().__init__(max_failed_batches=1)
        self.down = down

    def _grade_answers(self, problems, answers):
        if self.down:
            return [Verdict(None, error="http: 503 Service Unavailable", attempts=3) for _ in answers]
        return [Verdict(min(7, a.count("e"))) for a in answers]


class Strategy:
    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 - Lightning's name
        t = torch.tensor([int(decision)])
        dist.all_reduce(t)
        return bool(t.item() == dist.get_world_size()) if all else bool(t.item())


class SavingCallback(PreemptionCallback):
    """Saves the rollouts under ``directory``; the checkpoint itself is only counted."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory, self.stopped = directory, 0

    def checkpoint_dir(self, trainer) -> str:
        return str(self.directory)

    def save_and_stop(self, trainer, where: str, mid_step: bool = False) -> str:
        self.stopped += 1
        return ""


def _trainer(rank: int, world: int):
    # a real preemption callback: between generation parts it makes its collective
    return SimpleNamespace(global_rank=rank, world_size=world, callbacks=[PreemptionCallback()], strategy=Strategy())


def _producer(tokenizer, engine, judge, chunks: int = 2) -> RolloutProducer:
    return RolloutProducer(engine, judge, tokenizer, SamplingSettings(temperature=1.0, max_tokens=16, n=2),
                           chunks=chunks)


def _raises_on_every_rank(kind, run, failed_rank: int, rank: int, world: int, says: str) -> None:
    with pytest.raises(kind) as caught:
        run()
    message = str(caught.value)
    assert f"rank {failed_rank} failed: {kind.__name__}: " in message and says in message, message
    messages = [None] * world
    dist.all_gather_object(messages, message)  # also: the collectives are still in step
    assert messages[0] == messages[1], messages


def _check(rank: int, world: int, tokenizer) -> None:
    trainer = _trainer(rank, world)
    mine = PROBLEMS[rank::world]  # 4 problems per rank: 2 per part

    # the judge goes down on rank 1 in the first of two parts; rank 0 stops at the
    # check between the parts (it does not generate the second)
    engine = Engine(tokenizer)
    producer = _producer(tokenizer, engine, Judge(down=rank == 1))
    _raises_on_every_rank(JudgeUnavailableError, lambda: step_rollouts(trainer, producer, PendingRollouts(), mine, 0),
                          1, rank, world, "check the grader server")
    assert engine.calls == 1

    # every prompt too long on rank 0: it fails before generating; rank 1 meets it
    # after its first part
    engine = Engine(tokenizer, max_model_len=20 if rank == 0 else 4096)
    producer = _producer(tokenizer, engine, Judge())
    _raises_on_every_rank(ValueError, lambda: step_rollouts(trainer, producer, PendingRollouts(), mine, 0),
                          0, rank, world, "every prompt of the batch was too long")
    assert engine.calls == (0 if rank == 0 else 1)

    # stale completions on rank 1 in the last part: rank 0 meets it after its rollouts
    engine = Engine(tokenizer, stale_on_call=2 if rank == 1 else None)
    producer = _producer(tokenizer, engine, Judge())
    _raises_on_every_rank(StaleRolloutError, lambda: step_rollouts(trainer, producer, PendingRollouts(), mine, 0),
                          1, rank, world, "expected 0")
    assert engine.calls == 2

    # the reasoning cache's pool refresh (a callback, on each rank alone) fails on rank 1:
    # raised in the step's rollouts, where the ranks meet
    engine = Engine(tokenizer, broken=rank == 1)
    rc = ReasoningCacheProducer(_producer(tokenizer, engine, Judge(), chunks=1),
                                ReasoningCacheSettings(cycles=1, states_per_problem=1))
    rc.pool = StatePool()
    rc.refresh_pool(mine, 0)  # does not raise here: the other rank would not hear of it
    engine.broken = False
    _raises_on_every_rank(ConnectionError, lambda: step_rollouts(trainer, rc, PendingRollouts(), mine, 0),
                          1, rank, world, "engine went away")

    # a preemption stops the rollouts between parts, and rank 1 cannot write its share of
    # them: rank 0 must not go on into the checkpoint's collectives
    scratch = Path(tempfile.mkdtemp())
    (scratch / "file").touch()
    saving = SavingCallback(scratch / "file" / "x" if rank == 1 else scratch)
    if rank == 0:
        preemption_request.request("SIGUSR1")
    try:
        trainer = SimpleNamespace(global_rank=rank, world_size=world, callbacks=[saving], strategy=Strategy())
        producer = _producer(tokenizer, Engine(tokenizer), Judge())
        _raises_on_every_rank(NotADirectoryError, lambda: step_rollouts(trainer, producer, PendingRollouts(), mine, 0),
                              1, rank, world, "step 0: saving the rollouts for a preemption")
    finally:
        preemption_request.clear()
    assert saving.stopped == 0

    # no failure: every rank gets its own rollouts
    engine = Engine(tokenizer)
    batch, from_saved = step_rollouts(trainer, _producer(tokenizer, engine, Judge()), PendingRollouts(), mine, 0)
    assert not from_saved and engine.calls == 2
    assert torch.equal(batch.rewards, torch.full((8,), 3 / 7))  # "eee": 3 points; 4 problems x n = 2


@pytest.mark.timeout(300)
def test_a_failure_on_one_rank_stops_every_rank_with_the_same_error(tiny_qwen3_tokenizer):
    run_on_ranks(_check, 2, tiny_qwen3_tokenizer, timeout_s=60)
