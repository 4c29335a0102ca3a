"""What every judge does around the grading itself.

Cut the answer out of the completion, score truncated and empty answers 0 without a
call, count everything, and stop the run when the grader is down (every item of
several consecutive batches failed) instead of training on nothing. Subclasses only
implement :meth:`BaseJudge._grade_answers`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from qed_lightning.contracts import GradingItem, Problem, Verdict
from qed_lightning.judging.answer import extract_answer
from qed_lightning.judging.stats import JudgeStats

__all__ = ["FAILURE_POLICIES", "BaseJudge", "JudgeUnavailableError", "rewards_from_verdicts"]

FAILURE_POLICIES = ("zero", "mask")


class JudgeUnavailableError(RuntimeError):
    """Raised after ``max_failed_batches`` consecutive batches in which no item got a verdict."""


def rewards_from_verdicts(verdicts: Sequence[Verdict], on_failure: str = "zero") -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (score / 7) and a keep-mask, one per verdict.

    A failed verdict gets reward 0 in both policies; with ``"mask"`` its mask entry is
    False so the loss can drop it (a failure scored as a real 0 injects noise into the
    group's advantages), with ``"zero"`` it is kept as a 0, as in the paper.

    Returns:
        ``rewards`` [N] float32 and ``keep`` [N] bool.
    """
    if on_failure not in FAILURE_POLICIES:
        raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}")
    rewards = torch.tensor([v.reward for v in verdicts], dtype=torch.float32)  # [N]
    keep = torch.tensor([v.ok or on_failure == "zero" for v in verdicts], dtype=torch.bool)  # [N]
    return rewards, keep


class BaseJudge:
    """Shared settings of every judge.

    Args:
        answer_mode: ``"after_think"`` (grade the text after the last ``</think>``; none
            means truncated) or ``"whole"`` (models that do not think).
        strip_self_evaluation: Drop a trailing self-evaluation section before grading.
        on_failure: ``"zero"`` or ``"mask"``: what :meth:`rewards` does with failed verdicts.
        max_failed_batches: Consecutive batches with no verdict at all before
            :class:`JudgeUnavailableError` stops the run (0 disables the check).
    """

    def __init__(
        self,
        answer_mode: str = "after_think",
        strip_self_evaluation: bool = True,
        on_failure: str = "zero",
        max_failed_batches: int = 3,
    ) -> None:
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}")
        extract_answer("", answer_mode)  # validates the mode now, not at the first batch
        self.answer_mode = answer_mode
        self.strip_self_evaluation = strip_self_evaluation
        self.on_failure = on_failure
        self.max_failed_batches = max_failed_batches
        self.last_stats = JudgeStats()
        self.total_stats = JudgeStats()
        self._failed_batches = 0

    def _grade_answers(self, problems: Sequence[Problem], answers: Sequence[str]) -> list[Verdict]:
        raise NotImplementedError

    def check_problems(self, problems: Sequence[Problem]) -> None:
        """Raises ``ValueError`` naming the problem if one lacks something this judge
        fills into its prompt (e.g. a rubric). The loaders call it for every problem
        before any generation (``data.judge_ready``), where a failure becomes a bad row
        naming the file, row and column; :meth:`grade` calls it again per batch."""

    def grade(self, items: Sequence[GradingItem]) -> list[Verdict]:
        """One verdict per item, in order. Never raises for a grader failure (those
        are counted verdicts), only when the grader has been down for
        ``max_failed_batches`` batches or an item lacks what the judge needs."""
        self.check_problems([item.problem for item in items])
        extracted = [extract_answer(item.proof, self.answer_mode, self.strip_self_evaluation) for item in items]
        verdicts: list[Verdict | None] = [
            Verdict(score=0, origin="no_answer", raw=f"not graded: {ex.skip} answer") if ex.skip else None
            for ex in extracted
        ]
        todo = [i for i, v in enumerate(verdicts) if v is None]
        if todo:
            graded = self._grade_answers([items[i].problem for i in todo], [extracted[i].text for i in todo])
            for i, verdict in zip(todo, graded, strict=True):
                verdicts[i] = verdict
        stats = JudgeStats()
        for verdict in verdicts:
            stats.add(verdict)
            self.total_stats.add(verdict)
        self.last_stats = stats
        self._check_alive(stats, verdicts)
        return verdicts  # type: ignore[return-value]

    def rewards(self, verdicts: Sequence[Verdict]) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`rewards_from_verdicts` with this judge's ``on_failure``."""
        return rewards_from_verdicts(verdicts, self.on_failure)

    def metrics(self) -> dict[str, float]:
        """The last batch's metrics, ``judge/...``."""
        return self.last_stats.metrics()

    def _check_alive(self, stats: JudgeStats, verdicts: Sequence[Verdict]) -> None:
        if stats.calls == 0:
            return  # nothing was asked of the grader: says nothing about its health
        if stats.infrastructure_failures < stats.calls:
            self._failed_batches = 0
            return
        self._failed_batches += 1
        if self.max_failed_batches and self._failed_batches >= self.max_failed_batches:
            last = next(v.error for v in reversed(verdicts) if v.error)
            raise JudgeUnavailableError(
                f"the judge failed every item of {self._failed_batches} consecutive batches "
                f"(errors: {dict(stats.failures)}; last: {last}); check the grader server"
            )
