"""One step's rollouts: prompts -> engine (n samples each) -> judge -> RolloutBatch.

Called from the training step, after the previous step's weight push, so the batch
trained at step t is sampled with the weights after step t-1 (on-policy; Lightning's
dataloader prefetch only ever sees prompt lists). Rewards are on the data path here,
not in a callback: they are what the step trains on.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

from qed_lightning.contracts import GradingItem, Judge, Problem, RolloutEngine, SamplingSettings
from qed_lightning.judging.base import rewards_from_verdicts
from qed_lightning.models import user_turn_ids
from qed_lightning.rollouts.batch import RolloutBatch, build_rollout_batch
from qed_lightning.rollouts.prompts import PROOF_PROMPT, render_rollout_prompt
from qed_lightning.rollouts.records import RolloutRecorder
from qed_lightning.rollouts.seeds import sample_seed

__all__ = ["LONG_PROMPT_POLICIES", "RolloutProducer", "StaleRolloutError"]

log = logging.getLogger(__name__)
LONG_PROMPT_POLICIES = ("skip", "error")


class StaleRolloutError(RuntimeError):
    """Completions came from other weights than the step expects (a missed weight push)."""


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
    """

    def __init__(self, engine: RolloutEngine, judge: Judge, tokenizer, sampling: SamplingSettings,
                 prompt_template: str = PROOF_PROMPT, seed: int = 0, on_long_prompt: str = "skip",
                 recorder: RolloutRecorder | None = None) -> None:
        if on_long_prompt not in LONG_PROMPT_POLICIES:
            raise ValueError(f"on_long_prompt must be one of {LONG_PROMPT_POLICIES}, got {on_long_prompt!r}")
        render_rollout_prompt(tokenizer, "check", prompt_template)  # refuse a bad template now
        self.engine, self.judge, self.tokenizer, self.sampling = engine, judge, tokenizer, sampling
        self.prompt_template, self.seed, self.on_long_prompt, self.recorder = prompt_template, seed, on_long_prompt, recorder
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.last_metrics: dict[str, float] = {}
        self.last_kept: list[int] = []

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
                messages: Sequence[str] | None = None) -> RolloutBatch:
        """Samples ``sampling.n`` completions per problem, grades them, returns the batch.

        ``expected_version`` (the step's on-policy weight version) is checked against
        every completion's stamp. ``messages`` replaces the templated problem as each
        problem's user turn (the reasoning cache's prompts); grading still uses the
        problem itself. ``last_kept`` holds the indices of the problems in the batch.
        """
        if messages is not None and len(messages) != len(problems):
            raise ValueError(f"{len(messages)} messages for {len(problems)} problems")
        kept, prompt_ids, self.last_kept, skipped = self._prompts(problems, messages)
        if not kept:
            raise ValueError(f"step {step}: every prompt of the batch was too long for the engine ({skipped} skipped)")
        seeds = [[sample_seed(self.seed, step, p.id, j) for j in range(self.sampling.n)] for p in kept]
        start = time.perf_counter()
        groups = self.engine.generate(prompt_ids, self.sampling, sample_seeds=seeds)
        gen_s = time.perf_counter() - start
        flat = [c for g in groups for c in g]
        if expected_version is not None and any(c.weight_version != expected_version for c in flat):
            got = sorted({c.weight_version for c in flat})
            raise StaleRolloutError(f"step {step}: completions from weight version(s) {got}, expected {expected_version}")
        start = time.perf_counter()
        items = [GradingItem(p, c.text) for p, g in zip(kept, groups) for c in g]
        verdicts = self.judge.grade(items)
        judge_s = time.perf_counter() - start
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
            self.last_metrics.update(self.judge.metrics())
        log.info("step %d: %d completions, %d tokens in %.1f s (%.0f tok/s); judged in %.1f s; mean reward %.3f",
                 step, len(flat), tokens, gen_s, tokens / max(gen_s, 1e-9), judge_s, float(rewards.mean()))
        if self.recorder is not None:
            self.recorder.write(step, batch)
        return batch
