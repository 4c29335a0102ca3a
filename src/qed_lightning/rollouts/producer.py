"""One step's rollouts: prompts -> engine (n samples each) -> judge -> RolloutBatch.

Called from the training step, after the previous step's weight push, so the batch
trained at step t is sampled with the weights after step t-1 (on-policy; Lightning's
dataloader prefetch only ever sees prompt lists). Rewards are on the data path here,
not in a callback: they are what the step trains on.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from qed_lightning.contracts import GradingItem, Judge, Problem, RolloutEngine, SamplingSettings
from qed_lightning.judging.base import rewards_from_verdicts
from qed_lightning.judging.stats import JudgeStats
from qed_lightning.models import user_turn_ids
from qed_lightning.rollouts.batch import RolloutBatch, build_rollout_batch
from qed_lightning.rollouts.prompts import PROOF_PROMPT, render_rollout_prompt
from qed_lightning.rollouts.records import RolloutRecorder
from qed_lightning.rollouts.seeds import sample_seed

__all__ = ["LONG_PROMPT_POLICIES", "RolloutProducer", "RolloutsInterrupted", "StaleRolloutError"]

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
    """

    def __init__(self, engine: RolloutEngine, judge: Judge, tokenizer, sampling: SamplingSettings,
                 prompt_template: str = PROOF_PROMPT, seed: int = 0, on_long_prompt: str = "skip",
                 recorder: RolloutRecorder | None = None, chunks: int = 1) -> None:
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        if on_long_prompt not in LONG_PROMPT_POLICIES:
            raise ValueError(f"on_long_prompt must be one of {LONG_PROMPT_POLICIES}, got {on_long_prompt!r}")
        render_rollout_prompt(tokenizer, "check", prompt_template)  # refuse a bad template now
        self.engine, self.judge, self.tokenizer, self.sampling = engine, judge, tokenizer, sampling
        self.prompt_template, self.seed, self.on_long_prompt, self.recorder = prompt_template, seed, on_long_prompt, recorder
        self.chunks = chunks
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.last_metrics: dict[str, float] = {}
        self.last_kept: list[int] = []

    def _generate_and_grade(self, problems: list[Problem], prompt_ids: list[list[int]], step: int,
                            expected_version: int | None):
        """Groups of completions and their verdicts (flat, group-major) for ``problems``,
        and the (generate, judge) seconds."""
        seeds = [[sample_seed(self.seed, step, p.id, j) for j in range(self.sampling.n)] for p in problems]
        start = time.perf_counter()
        groups = self.engine.generate(prompt_ids, self.sampling, sample_seeds=seeds)
        gen_s = time.perf_counter() - start
        flat = [c for g in groups for c in g]
        if expected_version is not None and any(c.weight_version != expected_version for c in flat):
            got = sorted({c.weight_version for c in flat})
            raise StaleRolloutError(f"step {step}: completions from weight version(s) {got}, expected {expected_version}")
        start = time.perf_counter()
        verdicts = self.judge.grade([GradingItem(p, c.text) for p, g in zip(problems, groups) for c in g])
        return groups, verdicts, (gen_s, time.perf_counter() - start)

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
        gen_s = judge_s = 0.0
        parts = _split(len(kept), self.chunks)
        for number, part in enumerate(parts):
            todo = [i for i in part if kept[i].id not in done]
            if todo:
                g, v, times = self._generate_and_grade([kept[i] for i in todo], [prompt_ids[i] for i in todo], step,
                                                       expected_version)
                gen_s, judge_s = gen_s + times[0], judge_s + times[1]
                start = 0
                for k, i in enumerate(todo):  # verdicts are flat, group-major
                    done[kept[i].id] = (g[k], v[start:start + len(g[k])])
                    start += len(g[k])
            if number < len(parts) - 1 and stop_requested is not None and stop_requested():
                raise RolloutsInterrupted(step, {p.id: done[p.id] for p in kept if p.id in done})
        groups = [done[p.id][0] for p in kept]
        verdicts = [v for p in kept for v in done[p.id][1]]
        flat = [c for g in groups for c in g]
        if hasattr(self.judge, "rewards"):
            rewards, keep = self.judge.rewards(verdicts)
        else:
            rewards, keep = rewards_from_verdicts(verdicts)
        batch = build_rollout_batch(kept, groups, verdicts, rewards, keep, self.pad_id)
        tokens = batch.num_completion_tokens
        self.last_metrics = {
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
            self.last_metrics.update(stats.metrics())
        log.info("step %d: %d completions, %d tokens in %.1f s (%.0f tok/s); judged in %.1f s; mean reward %.3f",
                 step, len(flat), tokens, gen_s, tokens / max(gen_s, 1e-9), judge_s, float(rewards.mean()))
        if self.recorder is not None:
            self.recorder.write(step, batch)
        return batch


def _split(count: int, parts: int) -> list[list[int]]:
    """``range(count)`` in ``parts`` contiguous pieces (some empty when count < parts):
    always ``parts`` pieces, so every rank checks for a stop equally often."""
    bounds = [count * k // parts for k in range(parts + 1)]
    return [list(range(bounds[k], bounds[k + 1])) for k in range(parts)]
