"""A scaffold's results as ``qed eval`` generation rows (what gets graded, and the cost)."""
from __future__ import annotations

from typing import Any, Sequence

from qed_lightning.contracts import Problem
from qed_lightning.scaffolds.base import ProblemContext, Scaffold
from qed_lightning.scaffolds.call_store import CallStore
from qed_lightning.scaffolds.chat import ChatGenerate
from qed_lightning.scaffolds.driver import run_scaffold

__all__ = ["scaffold_rows"]


def scaffold_rows(scaffold: Scaffold, problems: Sequence[Problem], framed: Sequence[str], sample: int, seed: int,
                  answer_mode: str, generate: ChatGenerate, store: CallStore) -> list[dict[str, Any]]:
    """One generation row per problem: the chosen reply's whole text (graded as a
    single-turn sample is) with the scaffold's cost beside it.

    No usable proof because calls failed: the row carries an ``error`` (a counted
    generation failure, retried by the next run). No usable proof otherwise (every
    candidate cut or skipped): an empty text, which the judge scores 0 without a call,
    as it does a truncated single-turn sample.
    """
    contexts = [ProblemContext(p, f, sample, seed, answer_mode) for p, f in zip(problems, framed)]
    rows = []
    for ctx, (result, cost) in zip(contexts, run_scaffold(scaffold, contexts, generate, store)):
        reply = result.reply
        error = None
        if reply is None and cost.failed:
            error = f"scaffold: {cost.failed} call(s) failed and no usable proof is left ({result.reason})"
        rows.append(dict(
            problem_id=ctx.problem.id, sample=sample, text=reply.text if reply is not None else "",
            tokens=cost.tokens, finish_reason="length" if reply is None or reply.truncated else "stop",
            turns=cost.calls, error=error, scaffold=scaffold.name, calls=cost.calls,
            prompt_tokens=cost.prompt_tokens, skipped_calls=cost.skipped, failed_calls=cost.failed,
            truncated_calls=cost.truncated, judge_calls=cost.judge_calls, replayed_calls=cost.replayed,
            chosen=result.reason, detail=result.detail))
    return rows
