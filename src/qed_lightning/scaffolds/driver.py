"""Runs a scaffold over many problems: stage-synchronous batches, replay, cost.

``batched`` (the default) advances every problem of a chunk one stage at a time, so a
stage of all problems is one ``generate`` call: the engine sees every request that can
run at once (an RSA round of 16 problems is 128 merge prompts), instead of a thread per
problem trickling a few calls each. ``per_problem`` is the released evaluation's
schedule (a thread per problem, each stage's calls sent in groups of at most
``per_problem_calls``), kept for comparison (``bench/scaffolds.py``); against an
in-process engine its threads take turns.

Replay: before a call runs, the call store is asked for the reply to the very same
request (problem, sample, stage, slot and conversation digest); a rerun after a kill
therefore takes every finished stage from the store and generates only the rest. Each
call's seed derives from (run seed, sample, problem, stage, slot), never from its batch.
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from qed_lightning.contracts import Verdict
from qed_lightning.rollouts.seeds import sample_seed
from qed_lightning.scaffolds.base import Call, JudgeStage, ProblemContext, Reply, Scaffold, ScaffoldResult, Stage
from qed_lightning.scaffolds.call_store import CallStore
from qed_lightning.scaffolds.chat import ChatGenerate

__all__ = ["SCHEDULES", "ProblemCost", "RunTiming", "call_seed", "run_scaffold"]

SCHEDULES = ("batched", "per_problem")


@dataclass
class ProblemCost:
    """What one (problem, sample) cost.

    Attributes:
        calls: Calls that reached the model (replayed ones included: they cost this
            much when they ran); skipped calls are not among them.
        tokens: Generated tokens over those calls, reasoning included.
        prompt_tokens: Prompt tokens over those calls.
        skipped: Calls not made because the prompt did not fit the context.
        failed: Calls the engine or server failed.
        truncated: Replies cut by the token limit.
        replayed: Calls taken from the store instead of generated.
        judge_calls: Proofs sent to the scaffold's own judge (best-of-n).
        stages: Stage names in the order they ran.
    """

    calls: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    skipped: int = 0
    failed: int = 0
    truncated: int = 0
    replayed: int = 0
    judge_calls: int = 0
    stages: list[str] = field(default_factory=list)

    def add(self, reply: Reply, replayed: bool) -> None:
        self.replayed += int(replayed)
        if reply.skipped:
            self.skipped += 1
            return
        if reply.error is not None:
            self.failed += 1
            return
        self.calls += 1
        self.tokens += reply.tokens
        self.prompt_tokens += reply.prompt_tokens
        self.truncated += int(reply.truncated)


@dataclass
class RunTiming:
    """Wall time of a scaffold run and the share spent waiting on the model."""

    wall_s: float = 0.0
    generate_s: float = 0.0
    judge_s: float = 0.0
    generate_calls: int = 0  # batches handed to the engine or server

    @property
    def machinery_s(self) -> float:
        return max(self.wall_s - self.generate_s - self.judge_s, 0.0)


def call_seed(ctx: ProblemContext, stage: str, slot: int) -> int:
    return sample_seed(ctx.seed, ctx.sample, f"{ctx.problem.id}|{stage}", slot)


class _Lockstep:
    """One problem's scaffold run, advanced a stage at a time from outside."""

    def __init__(self, scaffold: Scaffold, ctx: ProblemContext) -> None:
        self.ctx, self.cost = ctx, ProblemCost()
        self.gen = scaffold.solve(ctx)
        self.result: ScaffoldResult | None = None
        self.stage: Stage | JudgeStage | None = None
        self._advance(None)

    def _advance(self, replies) -> None:
        try:
            self.stage = next(self.gen) if replies is None else self.gen.send(replies)
        except StopIteration as stop:
            self.stage, self.result = None, stop.value
            if not isinstance(self.result, ScaffoldResult):
                raise TypeError(f"scaffold returned {type(self.result).__name__}, not a ScaffoldResult") from None
            return
        if self.stage.name in self.cost.stages:
            raise ValueError(f"problem {self.ctx.problem.id!r}: stage name {self.stage.name!r} used twice "
                             "(stage names key the call store)")
        self.cost.stages.append(self.stage.name)

    def send(self, replies) -> None:
        self._advance(replies)


def _chat_stage(runs: Sequence[_Lockstep], generate: ChatGenerate, store: CallStore, timing: RunTiming,
                max_calls: int | None = None) -> None:
    """One stage of each run in ``runs`` (all ``Stage``s): replay what the store holds,
    generate the rest in one batch (or batches of ``max_calls``), store, and resume."""
    found: list[list[Reply | None]] = []
    todo: list[tuple[int, int, tuple, str, Call, int]] = []
    for r, run in enumerate(runs):
        stage = run.stage
        found.append([None] * len(stage.calls))
        for slot, call in enumerate(stage.calls):
            key, digest = (run.ctx.problem.id, run.ctx.sample, stage.name, slot), call.digest()
            hit = store.get(key, digest)
            if hit is not None:
                found[r][slot] = hit
                run.cost.add(hit, replayed=True)
            else:
                todo.append((r, slot, key, digest, call, call_seed(run.ctx, stage.name, slot)))
    step = max_calls or max(len(todo), 1)
    for start in range(0, len(todo), step):
        part = todo[start:start + step]
        replies = generate([(call, seed) for *_, call, seed in part])
        if len(replies) != len(part):
            raise RuntimeError(f"generation returned {len(replies)} replies for {len(part)} calls")
        store.put((key, digest, reply) for (_, _, key, digest, _, _), reply in zip(part, replies))
        for (r, slot, *_), reply in zip(part, replies):
            found[r][slot] = reply
            runs[r].cost.add(reply, replayed=False)
    for run, replies in zip(runs, found):
        run.send(replies)


def _verdict_digest(item) -> str:
    return hashlib.sha256(f"{item.problem.id}\x1f{item.proof}".encode()).hexdigest()[:16]


def _judge_stage(runs: Sequence[_Lockstep], scaffold: Scaffold, store: CallStore, timing: RunTiming) -> None:
    """The scaffold's own judge on each run's items: stored verdicts are replayed (so a
    resumed run chooses as the first one did, even with a sampling judge), the rest
    graded in one call; failed verdicts are not stored (the next run grades them again)."""
    judge = scaffold.judge()
    if judge is None:
        raise ValueError(f"scaffold {scaffold.name!r} asked for a judge stage but has no judge")
    found: list[list[Verdict | None]] = []
    todo: list[tuple[int, int, tuple, str, object]] = []
    for r, run in enumerate(runs):
        found.append([None] * len(run.stage.items))
        for slot, item in enumerate(run.stage.items):
            key, digest = (run.ctx.problem.id, run.ctx.sample, run.stage.name, slot), _verdict_digest(item)
            hit = store.get(key, digest)
            if hit is not None:
                found[r][slot] = Verdict(int(hit.answer), raw=hit.text, origin="replay")
                run.cost.judge_calls += 1  # as a replayed model call counts: it cost a call when it ran
            else:
                todo.append((r, slot, key, digest, item))
    began = time.perf_counter()
    verdicts: list[Verdict] = judge.grade([item for *_, item in todo]) if todo else []
    timing.judge_s += time.perf_counter() - began
    store.put((key, digest, Reply(v.raw, str(v.score))) for (_, _, key, digest, _), v in zip(todo, verdicts)
              if v.ok)
    for (r, slot, *_), verdict in zip(todo, verdicts):
        found[r][slot] = verdict
        runs[r].cost.judge_calls += int(verdict.origin == "judge")
    for run, replies in zip(runs, found):
        run.send(replies)


def _step(runs: Sequence[_Lockstep], scaffold: Scaffold, generate: ChatGenerate, store: CallStore,
          timing: RunTiming, max_calls: int | None = None) -> None:
    chat = [r for r in runs if isinstance(r.stage, Stage)]
    judged = [r for r in runs if isinstance(r.stage, JudgeStage)]
    if chat:
        _chat_stage(chat, generate, store, timing, max_calls)
    if judged:
        _judge_stage(judged, scaffold, store, timing)


def run_scaffold(scaffold: Scaffold, contexts: Sequence[ProblemContext], generate: ChatGenerate, store: CallStore,
                 schedule: str = "batched", per_problem_calls: int = 8, threads: int = 8,
                 timing: RunTiming | None = None) -> list[tuple[ScaffoldResult, ProblemCost]]:
    """Runs ``scaffold`` on every context; returns (result, cost) per context, in order.

    Args:
        schedule: ``batched`` or ``per_problem`` (``SCHEDULES``).
        per_problem_calls, threads: The ``per_problem`` schedule's calls per request
            group and problems at once (the released evaluation's 8 and 8).
        timing: Filled with the run's wall and generation time when given.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    timing = timing if timing is not None else RunTiming()
    lock = threading.Lock()  # an in-process engine serves one batch at a time

    def timed(calls):
        with lock:  # timed inside the lock: waiting for another thread's batch is not generation
            began = time.perf_counter()
            try:
                return generate(calls)
            finally:
                timing.generate_s += time.perf_counter() - began
                timing.generate_calls += 1

    began = time.perf_counter()
    if schedule == "batched":
        runs = [_Lockstep(scaffold, ctx) for ctx in contexts]
        while active := [r for r in runs if r.stage is not None]:
            _step(active, scaffold, timed, store, timing)
    else:

        def one(ctx: ProblemContext) -> _Lockstep:
            run = _Lockstep(scaffold, ctx)
            while run.stage is not None:
                _step([run], scaffold, timed, store, timing, per_problem_calls)
            return run

        with ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="qed-scaffold") as pool:
            runs = list(pool.map(one, contexts))
    timing.wall_s += time.perf_counter() - began
    return [(r.result, r.cost) for r in runs]
