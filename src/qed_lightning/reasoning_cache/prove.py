"""Test-time reasoning cache: prove with N reason -> summarize iterations.

Iteration i reasons from (problem, summary_i); between iterations a summarizer
condenses the chain of thought into the next summary. The answer is the post-
``</think>`` text of the last iteration, cut out exactly as a single-turn answer is for
the judge. A problem can so use more generated tokens in total than one context holds;
the tokens of every turn (reasoning and summaries) are counted per problem.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from qed_lightning.contracts import Problem, SamplingSettings
from qed_lightning.judging.answer import ExtractedAnswer
from qed_lightning.judging.client import CompletionClient
from qed_lightning.reasoning_cache.cycle import run_cycles
from qed_lightning.reasoning_cache.prompts import RCPrompts
from qed_lightning.reasoning_cache.roles import chat_overhead, client_generator, count_text_tokens, engine_generator
from qed_lightning.reasoning_cache.trajectory import CycleStats, Trajectory, final_answer

__all__ = ["RCProof", "prove_with_rc"]


@dataclass(frozen=True)
class RCProof:
    """One problem's test-time RC result.

    ``answer`` is what a judge grades; ``tokens`` every generated token (all
    reasoning and summary turns); ``iterations`` the reasoning turns that ran (fewer
    than asked when a prompt with its summary no longer fitted the context).
    """

    problem: Problem
    answer: ExtractedAnswer
    tokens: int
    iterations: int
    trajectory: Trajectory


def prove_with_rc(
    problems: Sequence[Problem],
    engine,
    tokenizer,
    sampling: SamplingSettings,
    iterations: int = 3,
    summarizer: CompletionClient | None = None,
    summary_sampling: SamplingSettings = SamplingSettings(temperature=0.7, top_p=0.8, top_k=20, max_tokens=2048),
    prompts: RCPrompts = RCPrompts(),
    seed: int = 0,
    answer_mode: str = "after_think",
    max_summary_tokens: int | None = None,
) -> tuple[list[RCProof], CycleStats]:
    """Proves each problem with ``iterations`` reasoning turns (the paper's evaluation: 3).

    Args:
        problems: What to prove.
        engine: The policy's engine (``VLLMEngine``, ``HFEngine``).
        tokenizer: The policy's tokenizer (chat template).
        sampling: The reasoning turns' sampling (``n`` is ignored: one attempt each).
        iterations: Reasoning turns; a summary follows every one but the last.
        summarizer: A separate summarizer model; None: the policy summarizes itself
            with ``summary_sampling`` (the paper's test-time default).
        prompts: The RC prompt templates.
        seed: Seed of every turn's sampling (per message, so batching does not matter).
        answer_mode: ``after_think`` (thinking models) or ``whole``.
        max_summary_tokens: Cut longer summaries (counted in the stats).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    reason = engine_generator(engine, tokenizer, dataclasses.replace(sampling, n=1), seed, 0, "rc_reason")

    def count_tokens(text: str) -> int:
        return count_text_tokens(tokenizer, text)

    if summarizer is None:
        summarize = engine_generator(engine, tokenizer, summary_sampling, seed, 0, "rc_summary")
    else:
        summarize = client_generator(summarizer, count_tokens)
    limit = getattr(engine, "max_model_len", None)
    trajectories, stats = run_cycles(
        problems, reason, summarize, iterations - 1, reason_final=True, prompts=prompts, count_tokens=count_tokens,
        max_prompt_tokens=None if limit is None else limit - sampling.max_tokens - chat_overhead(tokenizer),
        max_summary_tokens=max_summary_tokens)
    proofs = [RCProof(t.problem, final_answer(t, mode=answer_mode), t.total_tokens, len(t.reasoning), t)
              for t in trajectories]
    return proofs, stats
