"""Reason -> summarize -> reason again: the reasoning-cache cycle, engine-free.

Generation comes in as two callables, each taking a list of user messages and
returning one ``TurnOutput`` per message, so a cycle turn is one batched call for all
problems. RC training runs ``cycles`` cycles and serves the resulting (problem,
summary) states, the last one conditioned on the last summary with no reasoning turn
of its own (3 cycles -> 4 states); test-time RC asks for that last reasoning turn too
(``reason_final``) and keeps its answer.

Faults: the summarizer is a side model, so its failures never stop a run. A call that
raises fails every item of the batch, an empty text fails its item; either way the
previous summary stays in force and the failure is counted. A problem whose next
reasoning prompt exceeds ``max_prompt_tokens`` stops there and is counted as skipped.
The policy's ``reason`` callable is not guarded: its failure is the run's failure.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from qed_lightning.contracts import Problem
from qed_lightning.reasoning_cache.prompts import RCPrompts
from qed_lightning.reasoning_cache.trajectory import CycleStats, State, Trajectory, TurnOutput, cycle_stats

__all__ = ["THINK_END", "THINK_START", "chain_of_thought", "cut_summary", "run_cycles", "summary_text", "update_summary"]

log = logging.getLogger(__name__)

THINK_START, THINK_END = "<think>", "</think>"
Generate = Callable[[list[str]], list[TurnOutput]]
CountTokens = Callable[[str], int]


def _split_thinking(text: str) -> tuple[str, str | None]:
    """(thinking, answer) at the first ``</think>``, a leading ``<think>`` dropped;
    the answer is None when thinking was never closed."""
    body = text.lstrip()
    if body.startswith(THINK_START):
        body = body[len(THINK_START):]
    else:
        body = text
    thinking, closed, answer = body.partition(THINK_END)
    return thinking, (answer if closed else None)


def chain_of_thought(text: str) -> str:
    """The reasoning of a policy turn, stripped: the text before the first ``</think>``,
    or all of it when thinking was cut off before closing.

    The first ``</think>`` is where the chat format (and vLLM's reasoning parser) ends
    the thinking; a later ``</think>`` is part of the answer, so the summarizer never
    sees answer text as reasoning. The judge's answer (``final_answer``) starts after
    the last ``</think>`` instead, as single-turn grading does; text between the first
    and the last is in neither.
    """
    return _split_thinking(text)[0].strip()


def summary_text(text: str) -> str:
    """The summary in a summarizer's output, stripped: the text after the first
    ``</think>`` when the summarizer thinks; ``""`` when it opened ``<think>`` and never
    closed it (all it wrote was unfinished thinking); otherwise all of it."""
    _, answer = _split_thinking(text)
    if answer is not None:
        return answer.strip()
    return "" if text.lstrip().startswith(THINK_START) else text.strip()


def cut_summary(summary: str, max_chars: int | None = None, max_tokens: int | None = None,
                count_tokens: CountTokens | None = None) -> tuple[str, bool]:
    """(``summary`` within the budget, whether it was cut). ``max_tokens`` keeps the
    longest prefix that ``count_tokens`` puts within it (bisection over characters).
    A cut summary loses its trailing whitespace."""
    cut = False
    if max_chars is not None and len(summary) > max_chars:
        summary, cut = summary[:max_chars], True
    if max_tokens is not None:
        if count_tokens is None:
            raise ValueError("max_tokens needs count_tokens")
        if count_tokens(summary) > max_tokens:
            lo, hi = 0, len(summary)  # invariant: prefix lo fits, prefix hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if count_tokens(summary[:mid]) <= max_tokens else (lo, mid)
            summary, cut = summary[:lo], True
    return (summary.rstrip(), True) if cut else (summary, False)


def update_summary(previous: str, output: TurnOutput | None, max_chars: int | None = None,
                   max_tokens: int | None = None, count_tokens: CountTokens | None = None) -> tuple[str, bool, bool]:
    """(summary now in force, failed, cut). The new summary replaces ``previous``
    (the summary prompt asks it to carry over what still matters); a missing output
    or one with no summary text fails and keeps ``previous``."""
    text = summary_text(output.text) if output is not None else ""
    if not text:
        return previous, True, False
    text, cut = cut_summary(text, max_chars, max_tokens, count_tokens)
    if not text:  # nothing left within the budget: as good as no summary
        return previous, True, cut
    return text, False, cut


def _generate(fn: Generate, messages: list[str], role: str) -> list[TurnOutput]:
    outputs = list(fn(messages))
    if len(outputs) != len(messages):
        raise ValueError(f"{role} returned {len(outputs)} outputs for {len(messages)} messages")
    return outputs


def _summarize(fn: Generate, messages: list[str]) -> list[TurnOutput | None]:
    try:
        return _generate(fn, messages, "summarize")
    except Exception as err:  # noqa: BLE001 - any summarizer fault keeps the old summaries
        log.warning("summarizer failed for a batch of %d: %s: %s", len(messages), type(err).__name__, err)
        return [None] * len(messages)


def run_cycles(
    problems: Sequence[Problem],
    reason: Generate,
    summarize: Generate,
    cycles: int = 3,
    *,
    reason_final: bool = False,
    prompts: RCPrompts = RCPrompts(),
    count_tokens: CountTokens | None = None,
    max_prompt_tokens: int | None = None,
    max_summary_chars: int | None = None,
    max_summary_tokens: int | None = None,
) -> tuple[list[Trajectory], CycleStats]:
    """Runs ``cycles`` reason -> summarize cycles for every problem, one trajectory each.

    Args:
        problems: The problems, one trajectory each, in this order.
        reason: The policy: user messages -> one ``TurnOutput`` each.
        summarize: The summarizer, same shape; its faults are absorbed (see module).
        cycles: Reasoning + summary cycles; the trajectories hold ``cycles + 1`` states.
        reason_final: Also run a reasoning turn from the last state (test-time RC).
        prompts: The four templates.
        count_tokens: Token count of a user message (needed by the two token limits).
        max_prompt_tokens: A problem whose next reasoning message counts more is
            skipped from that turn on. Chat-template tokens are not in the count:
            leave room for them.
        max_summary_chars: Longer summaries are cut to this many characters.
        max_summary_tokens: Longer summaries are cut to this many tokens.

    Returns:
        The trajectories and their ``CycleStats``.
    """
    if cycles < 0:
        raise ValueError(f"cycles must be >= 0, got {cycles}")
    if count_tokens is None and (max_prompt_tokens is not None or max_summary_tokens is not None):
        raise ValueError("max_prompt_tokens and max_summary_tokens need count_tokens")
    trajectories = [Trajectory(problem) for problem in problems]
    for turn in range(cycles + 1):
        active, messages = [], []
        for t in trajectories:
            message = None if t.skipped_at is not None else prompts.reason(t.problem.statement, t.summary)
            if message is not None and max_prompt_tokens is not None and count_tokens(message) > max_prompt_tokens:
                log.warning("problem %r: reasoning prompt over %d tokens at turn %d: skipped",
                            t.problem.id, max_prompt_tokens, turn)
                t.skipped_at, message = turn, None
            t.states.append(State(t.problem, turn, None if message is None else t.summary))
            if message is not None:
                active.append(t)
                messages.append(message)
        last = turn == cycles
        if not active or (last and not reason_final):
            continue
        for t, out in zip(active, _generate(reason, messages, "reason")):
            t.reasoning.append(out)
        if last:
            continue
        summary_messages = [prompts.summarize(t.problem.statement, t.summary, _summary_input(t.reasoning[-1].text))
                            for t in active]
        for t, out in zip(active, _summarize(summarize, summary_messages)):
            summary, failed, cut = update_summary(t.summary, out, max_summary_chars, max_summary_tokens, count_tokens)
            t.summary_outputs.append(out)
            t.summaries.append(summary)
            t.summary_failed.append(failed)
            t.summary_cut.append(cut)
    return trajectories, cycle_stats(trajectories)


def _summary_input(text: str) -> str:
    # A turn that closed thinking at once still has something to summarise: its answer
    # (test-time RC falls back to the content the same way).
    thinking, answer = _split_thinking(text)
    return thinking.strip() or (answer or "").strip()
