"""Best-of-n: n independent proofs, each graded without the reference solution, the
best returned. The baseline every other scaffold has to beat per generated token.

The released evaluation has no best-of-n scaffold; n = 8 by default (the RSA population).
Stages: ``solve`` (n proofs, the framed problem as the only user message, as in
single-turn evaluation), then one of two ways to grade them:

- ``judge`` set (any ``BaseJudge``, e.g. ``LLMJudge`` with the ``rl_strict`` template
  over a served grader): a ``judge`` stage hands one ``GradingItem`` per candidate to
  that judge. The problem it sees is ``ctx.problem`` with the reference solution
  removed: a judge holding the official solution would be an oracle no test-time
  method has. The rubric (marking scheme) stays: the RL judge (``rl_strict``) grades
  against it, and a benchmark without rubrics needs a template that asks for none.
  A marking scheme often names the intended solution's key steps, so such a judge is
  not blind to the approach; a template without ``marking_scheme`` is.
  The judge reads the candidate's whole generation and extracts the answer itself
  (its own ``answer_mode``), as it does when grading single-turn samples. Its calls
  are counted as ``judge_calls``, not model calls.
- no judge: a ``grade`` stage asks the policy itself for a strict 0-7 grade in a box
  (the same grading prompt as Nomos, ``nomos.GRADE_USER``).

The highest real score wins; equal scores go to the lowest candidate index (the
candidates are exchangeable samples, so index order is as fair as a coin and needs no
seed). A failed verdict or an unparseable self-grade is counted (``failed_verdicts``)
and never wins over a real score, a real 0 included; when no candidate got a real score
the first candidate is returned and the reason says so. Calls: n with a judge (plus n
judge calls), 2n with self-grading.

Resume: the ``solve`` and ``grade`` calls and the judge's verdicts (failed ones
excepted) are replayed from the call store, so a resumed run picks what the first run
picked even with a sampling judge.
"""
from __future__ import annotations

import dataclasses

from qed_lightning.contracts import GradingItem, Verdict
from qed_lightning.judging.base import BaseJudge
from qed_lightning.scaffolds.base import (Call, JudgeStage, ProblemContext, Reply, Scaffold, ScaffoldResult, Solve,
                                          Stage, fill, register_scaffold)
from qed_lightning.scaffolds.nomos import EMPTY_PROOF, GRADE_USER, parse_grade

__all__ = ["BestOfN", "pick_best"]


def pick_best(scores: list[int | None]) -> int | None:
    """Position of the highest score (None = no real score), the first on ties; None
    when no position has a real score."""
    graded = [i for i, s in enumerate(scores) if s is not None]
    return min(graded, key=lambda i: (-scores[i], i)) if graded else None


@register_scaffold
class BestOfN(Scaffold):
    """n proofs, graded blind to the reference solution, the best returned.

    Args:
        n: Proofs generated per problem.
        judge: The grader (a ``BaseJudge``: ``LLMJudge``, ``RuleJudge``...); None lets
            the policy grade its own proofs (0-7, one extra call per proof).
        unusable_candidates: See ``Scaffold``. With ``keep``, a cut proof goes to the
            grader as it is (a judge scores a truncated answer 0 without a call).
    """

    name = "best_of_n"
    reference_calls = "n = 8 (+ 8 judge calls), or 2n = 16 self-graded"

    def __init__(self, n: int = 8, judge: BaseJudge | None = None, unusable_candidates: str = "drop") -> None:
        super().__init__(unusable_candidates)
        if n < 1:
            raise ValueError(f"best_of_n needs n >= 1, got n={n}")
        if judge is not None and not isinstance(judge, BaseJudge):
            raise ValueError(f"best_of_n's judge must be a BaseJudge (LLMJudge, RuleJudge...), got "
                             f"{type(judge).__name__}")
        self.n, self._judge = n, judge

    def judge(self) -> BaseJudge | None:
        return self._judge

    def max_calls(self) -> int:
        return self.n if self._judge is not None else 2 * self.n

    def solve(self, ctx: ProblemContext) -> Solve:
        detail = {"grader": "judge" if self._judge is not None else "self", "dropped": 0, "failed_verdicts": 0,
                  "scores": [None] * self.n, "winner": None}
        replies: list[Reply] = yield Stage("solve", [Call.of(ctx.statement)] * self.n)
        pool = self.candidates(replies)
        detail["dropped"] = self.n - len(pool)
        if not pool:
            return ScaffoldResult(None, "no usable proof among the candidates", detail)

        if self._judge is not None:
            blind = dataclasses.replace(ctx.problem, reference_solution=None)
            verdicts: list[Verdict] = yield JudgeStage("judge", [GradingItem(blind, replies[i].text) for i in pool])
            scores = [v.score if v.ok else None for v in verdicts]
        else:
            shown = [replies[i].answer if replies[i].answer.strip() else EMPTY_PROOF for i in pool]
            grades = yield Stage("grade", [Call.of(fill(GRADE_USER, problem=ctx.statement, proof=p)) for p in shown])
            scores = [parse_grade(g.answer, p) if g.error is None else None for p, g in zip(shown, grades)]
        for i, score in zip(pool, scores):
            detail["scores"][i] = score
        detail["failed_verdicts"] = sum(s is None for s in scores)

        best = pick_best(scores)
        if best is None:
            detail["winner"] = pool[0]
            return ScaffoldResult(replies[pool[0]], "no candidate got a score: the first candidate", detail)
        detail["winner"] = pool[best]
        return ScaffoldResult(replies[pool[best]], f"highest {detail['grader']} score", detail)
