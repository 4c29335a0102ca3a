"""One step's rollouts: prompts -> engine (n samples each) -> judge -> RolloutBatch.

Called from the training step, after the previous step's weight push, so the batch
trained at step t is sampled with the weights after step t-1 (on-policy; Lightning's
dataloader prefetch only ever sees prompt lists). Rewards are on the data path here,
not in a callback: they are what the step trains on.
"""
from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from qed_lightning.contracts import Completion, GradingItem, Judge, Problem, RolloutEngine, SamplingSettings, Verdict
from qed_lightning.judging.base import rewards_from_verdicts
from qed_lightning.judging.stats import JudgeStats
from qed_lightning.models import user_turn_ids
from qed_lightning.rollouts.batch import RolloutBatch, build_rollout_batch
from qed_lightning.rollouts.prompts import PROOF_PROMPT, render_rollout_prompt
from qed_lightning.rollouts.records import RolloutRecorder
from qed_lightning.rollouts.seeds import sample_seed

__all__ = ["LONG_PROMPT_POLICIES", "RolloutProducer", "RolloutsInterrupted", "SampledGroups", "StaleRolloutError"]

log = logging.getLogger(__name__)
LONG_PROMPT_POLICIES = ("skip", "error")


class StaleRolloutError(RuntimeError):
    """Completions came from other weights than the step expects (a missed weight push)."""


class RolloutsInterrupted(Exception):
    """Raised between generation chunks when a stop was asked for. ``finished`` maps a
    problem id to its group's completions and verdicts (generated and graded)."""

    def __init__(self, step: int, finished: dict[str, tuple[list, list]]) -> None:
        super().__init__(f"step {step}: rollouts interrupted with {len(finished)} group(s) finished")
        self.step, self.finished = step, finished


class RolloutProducer:
    """Args:
        engine: A ``RolloutEngine`` (VLLMEngine, HFEngine).
        judge: A ``Judge``; its ``on_failure`` decides the reward mask when it has one.
        tokenizer: The policy's tokenizer (chat template, pad id).
        sampling: Group size ``n``, temperature, max_tokens... (every field explicit).
        prompt_template: Text around the problem (``{problem}``).
        seed: Run seed from which every sample's seed is derived.
        on_long_prompt: ``"skip"`` (count it) or ``"error"`` for a prompt whose length
            plus ``max_tokens`` exceeds the engine's context.
        recorder: Where rollout records go (None: nowhere).
        chunks: Generate and grade a step's problems in this many parts, so that a stop
            asked for mid-generation keeps what is finished (see ``produce``). Each sample
            is seeded on its own, but the engine's numerics (log-probs; on GPUs possibly
            tokens) can depend on a batch's makeup; fewer prompts per engine call can cost
            throughput at each part's tail.
        judge_overlap: With ``chunks`` > 1, grade each part in a background thread while
            the engine generates the next part (a remote judge's time then hides behind
            generation). The same engine calls and judge calls as without it, in the
            same order, so the batch is the same; only the last part's grading is not
            hidden. The judge is called from one thread, one part at a time.
    """

    def __init__(self, engine: RolloutEngine, judge: Judge, tokenizer, sampling: SamplingSettings,
                 prompt_template: str = PROOF_PROMPT, seed: int = 0, on_long_prompt: str = "skip",
                 recorder: RolloutRecorder | None = None, chunks: int = 1, judge_overlap: bool = False) -> None:
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        if judge_overlap and chunks < 2:
            raise ValueError("judge_overlap grades one part while the next generates: it needs chunks >= 2 "
                             f"(rollout_chunks), got {chunks}")
        if on_long_prompt not in LONG_PROMPT_POLICIES:
            raise ValueError(f"on_long_prompt must be one of {LONG_PROMPT_POLICIES}, got {on_long_prompt!r}")
        render_rollout_prompt(tokenizer, "check", prompt_template)  # refuse a bad template now
        self.engine, self.judge, self.tokenizer, self.sampling = engine, judge, tokenizer, sampling
        self.prompt_template, self.seed, self.on_long_prompt, self.recorder = prompt_template, seed, on_long_prompt, recorder
        self.chunks, self.judge_overlap = chunks, judge_overlap
        self._grader: ThreadPoolExecutor | None = None  # the judge's thread under judge_overlap
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.last_metrics: dict[str, float] = {}
        self.last_kept: list[int] = []

    def _generate(self, problems: list[Problem], prompt_ids: list[list[int]], step: int,
                  expected_version: int | None) -> tuple[list[list], float]:
        """Groups of completions for ``problems`` (their versions checked) and the seconds."""
        seeds = [[sample_seed(self.seed, step, p.id, j) for j in range(self.sampling.n)] for p in problems]
        start = time.perf_counter()
        groups = self.engine.generate(prompt_ids, self.sampling, sample_seeds=seeds)
        gen_s = time.perf_counter() - start
        flat = [c for g in groups for c in g]
        if expected_version is not None and any(c.weight_version != expected_version for c in flat):
            got = sorted({c.weight_version for c in flat})
            raise StaleRolloutError(f"step {step}: completions from weight version(s) {got}, expected {expected_version}")
        return groups, gen_s

    def _grade(self, problems: list[Problem], groups: list[list]) -> tuple[list, float]:
        """Verdicts (flat, group-major) for ``groups`` and the seconds."""
        start = time.perf_counter()
        verdicts = self.judge.grade([GradingItem(p, c.text) for p, g in zip(problems, groups) for c in g])
        return verdicts, time.perf_counter() - start

    def _generate_and_grade(self, problems: list[Problem], prompt_ids: list[list[int]], step: int,
                            expected_version: int | None):
        """Groups of completions and their verdicts (flat, group-major) for ``problems``,
        and the (generate, judge) seconds."""
        groups, gen_s = self._generate(problems, prompt_ids, step, expected_version)
        verdicts, judge_s = self._grade(problems, groups)
        return groups, verdicts, (gen_s, judge_s)

    def _submit_grading(self, problems: list[Problem], groups: list[list]) -> Future:
        if self._grader is None:
            self._grader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qed-grading")
        return self._grader.submit(self._grade, problems, groups)

    def _prompts(self, problems: Sequence[Problem], messages: Sequence[str] | None
                 ) -> tuple[list[Problem], list[list[int]], list[int], int]:
        limit = getattr(self.engine, "max_model_len", None)
        kept, ids, index, skipped = [], [], [], 0
        for i, problem in enumerate(problems):
            if messages is None:
                prompt = render_rollout_prompt(self.tokenizer, problem.statement, self.prompt_template)
            else:
                prompt = user_turn_ids(self.tokenizer, messages[i])
            if limit is not None and len(prompt) + self.sampling.max_tokens > limit:
                message = (f"problem {problem.id!r}: prompt of {len(prompt)} tokens + max_tokens "
                           f"{self.sampling.max_tokens} exceeds the engine's max_model_len {limit}")
                if self.on_long_prompt == "error":
                    raise ValueError(message)
                log.warning("skipped: %s", message)
                skipped += 1
                continue
            kept.append(problem)
            ids.append(prompt)
            index.append(i)
        return kept, ids, index, skipped

    def produce(self, problems: Sequence[Problem], step: int, expected_version: int | None = None,
                messages: Sequence[str] | None = None, stop_requested: Callable[[], bool] | None = None,
                finished: dict[str, tuple[list, list]] | None = None) -> RolloutBatch:
        """Samples ``sampling.n`` completions per problem, grades them, returns the batch.

        ``expected_version`` (the step's on-policy weight version) is checked against
        every completion's stamp. ``messages`` replaces the templated problem as each
        problem's user turn (the reasoning cache's prompts); grading still uses the
        problem itself. ``last_kept`` holds the indices of the problems in the batch.

        With ``chunks`` > 1 the problems are generated and graded part by part, and
        ``stop_requested()`` is called after every part but the last (the same number of
        times on every rank: it may be a collective); when it says stop,
        ``RolloutsInterrupted`` carries the finished groups. ``finished`` (from such an
        interruption) supplies groups that are not generated again.
        """
        if messages is not None and len(messages) != len(problems):
            raise ValueError(f"{len(messages)} messages for {len(problems)} problems")
        kept, prompt_ids, self.last_kept, skipped = self._prompts(problems, messages)
        if not kept:
            raise ValueError(f"step {step}: every prompt of the batch was too long for the engine ({skipped} skipped)")
        done = dict(finished or {})
        times = {"generate": 0.0, "judge": 0.0, "judge_wait": 0.0}
        grading: tuple[list[int], list[list], Future] | None = None  # the part graded in the background

        def collect() -> None:  # the background part's verdicts into ``done`` (waits for them)
            nonlocal grading
            if grading is not None:
                todo, g, future = grading
                grading, start = None, time.perf_counter()
                v, judge_s = future.result()
                times["judge_wait"] += time.perf_counter() - start
                times["judge"] += judge_s
                _record(done, [kept[i].id for i in todo], g, v)

        parts = _split(len(kept), self.chunks)
        try:
            for number, part in enumerate(parts):
                todo = [i for i in part if kept[i].id not in done]
                if todo:
                    todo_problems = [kept[i] for i in todo]
                    g, gen_s = self._generate(todo_problems, [prompt_ids[i] for i in todo], step, expected_version)
                    times["generate"] += gen_s
                    if self.judge_overlap:
                        collect()  # the previous part: graded while this one generated
                        grading = (todo, g, self._submit_grading(todo_problems, g))
                    else:
                        v, judge_s = self._grade(todo_problems, g)
                        times["judge"] += judge_s
                        times["judge_wait"] += judge_s
                        _record(done, [kept[i].id for i in todo], g, v)
                if number < len(parts) - 1 and stop_requested is not None and stop_requested():
                    collect()  # a part still being graded is finished and saved with the others
                    raise RolloutsInterrupted(step, {p.id: done[p.id] for p in kept if p.id in done})
            collect()
        finally:
            if grading is not None:  # an error elsewhere: the judge's thread is not left running alone
                grading[2].cancel()
                concurrent.futures.wait([grading[2]])
        groups = [done[p.id][0] for p in kept]
        verdicts = [v for p in kept for v in done[p.id][1]]
        batch, self.last_metrics = self._build(step, kept, groups, verdicts, skipped, times["generate"], times["judge"])
        if self.judge_overlap:
            # judge_s: the grader's own time; judge_wait_s: what the step waited for it
            self.last_metrics.update({"rollout/judge_wait_s": times["judge_wait"],
                                      "time/judge_hidden_s": max(0.0, times["judge"] - times["judge_wait"])})
        if self.recorder is not None:
            self.recorder.write(step, batch)
        return batch

    def _build(self, step: int, kept: list[Problem], groups: list[list], verdicts: list, skipped: int,
               gen_s: float, judge_s: float, mixed_versions: bool = False) -> tuple[RolloutBatch, dict[str, float]]:
        """The batch and its metrics from graded groups (touches no state of ``self``:
        it also runs in the grading thread of a lagged run)."""
        flat = [c for g in groups for c in g]
        if hasattr(self.judge, "rewards"):
            rewards, keep = self.judge.rewards(verdicts)
        else:
            rewards, keep = rewards_from_verdicts(verdicts)
        batch = build_rollout_batch(kept, groups, verdicts, rewards, keep, self.pad_id, mixed_versions=mixed_versions)
        tokens = batch.num_completion_tokens
        metrics = {
            "rollout/generate_s": gen_s, "rollout/judge_s": judge_s, "rollout/tokens_per_s": tokens / max(gen_s, 1e-9),
            "rollout/completion_tokens": float(tokens), "rollout/mean_completion_tokens": tokens / len(flat),
            "rollout/truncated_rate": float(batch.truncated.float().mean()), "rollout/skipped_long_prompts": float(skipped),
            "rollout/reward_mean": float(rewards.mean()), "rollout/reward_std": float(rewards.std(unbiased=False)),
            "rollout/weight_version": float(batch.weight_version),
        }
        if hasattr(self.judge, "metrics"):
            # over the whole step's verdicts: the judge's own metrics cover its last call,
            # one chunk of the step when it is generated in parts
            stats = JudgeStats()
            for verdict in verdicts:
                stats.add(verdict)
            metrics.update(stats.metrics())
        log.info("step %d: %d completions, %d tokens in %.1f s (%.0f tok/s); judged in %.1f s; mean reward %.3f",
                 step, len(flat), tokens, gen_s, tokens / max(gen_s, 1e-9), judge_s, float(rewards.mean()))
        return batch, metrics

    # ------------------------------------------------------------------ lagged runs (see modules/lagged_rollouts.py)

    def sample(self, problems: Sequence[Problem], step: int, expected_version: int | None = None) -> "SampledGroups":
        """The generation half of :meth:`produce` (in the same parts, with the same
        seeds): groups for ``problems`` as ``step``'s samples, not yet graded."""
        kept, prompt_ids, _, skipped = self._prompts(problems, None)
        if not kept:
            raise ValueError(f"step {step}: every prompt of the batch was too long for the engine ({skipped} skipped)")
        groups, gen_s = [], 0.0
        for part in _split(len(kept), self.chunks):
            if part:
                g, seconds = self._generate([kept[i] for i in part], [prompt_ids[i] for i in part], step,
                                            expected_version)
                groups, gen_s = groups + g, gen_s + seconds
        return SampledGroups(step, [p.id for p in problems], kept, groups, skipped, gen_s)

    def grade_sampled(self, sampled: "SampledGroups") -> tuple[RolloutBatch, dict[str, float]]:
        """Grades ``sampled`` (one judge call per part, as :meth:`produce`) and builds its
        batch, which may mix weight versions. Safe in a background thread: it records
        nothing; the caller records the batch when it trains on it."""
        verdicts, judge_s = [], 0.0
        if sampled.verdicts is not None:  # graded before a checkpoint
            verdicts = list(sampled.verdicts)
        else:
            for part in _split(len(sampled.kept), self.chunks):
                if part:
                    v, seconds = self._grade([sampled.kept[i] for i in part], [sampled.groups[i] for i in part])
                    verdicts, judge_s = verdicts + v, judge_s + seconds
            sampled.verdicts, sampled.judge_s = verdicts, judge_s
        return self._build(sampled.step, sampled.kept, sampled.groups, verdicts, sampled.skipped, sampled.gen_s,
                           sampled.judge_s, mixed_versions=True)


@dataclass
class SampledGroups:
    """One step's generated groups, graded later (``verdicts`` None until then).
    ``requested``: the ids of the problems asked for (``kept`` omits too-long prompts)."""

    step: int
    requested: list[str]
    kept: list[Problem]
    groups: list[list[Completion]]
    skipped: int
    gen_s: float
    verdicts: list[Verdict] | None = None
    judge_s: float = 0.0


def _record(done: dict, ids: list[str], groups: list[list], verdicts: list) -> None:
    """``done[id] = (group, its verdicts)``; ``verdicts`` are flat, group-major."""
    start = 0
    for problem_id, group in zip(ids, groups):
        done[problem_id] = (group, verdicts[start:start + len(group)])
        start += len(group)


def _split(count: int, parts: int) -> list[list[int]]:
    """``range(count)`` in ``parts`` contiguous pieces (some empty when count < parts):
    always ``parts`` pieces, so every rank checks for a stop equally often."""
    bounds = [count * k // parts for k in range(parts + 1)]
    return [list(range(bounds[k], bounds[k + 1])) for k in range(parts)]
