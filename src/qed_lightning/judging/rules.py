"""Built-in scoring rules for :class:`~qed_lightning.judging.rule_judge.RuleJudge`."""
from __future__ import annotations

from qed_lightning.contracts import Problem
from qed_lightning.evaluation.answer_check import answers_match, last_boxed

__all__ = ["boxed_answer_matches", "contains_letter_e", "last_boxed"]


def boxed_answer_matches(problem: Problem, answer: str) -> int:
    """7 if the final boxed answer (``last_boxed``: every box on the last line holding
    one) is the same math answer as ``problem.metadata["answer"]`` (equivalence as in
    AnswerBench evaluation; identical text when the checker cannot decide), else 0.
    Raises if the problem has no answer to compare with."""
    if "answer" not in problem.metadata:
        raise KeyError(f"problem {problem.id!r} has no metadata['answer'] to check against")
    boxed = last_boxed(answer)
    if boxed is None:
        return 0
    reference = str(problem.metadata["answer"])
    same = answers_match(boxed, reference)
    if same is None:
        same = "".join(boxed.split()) == "".join(reference.split())
    return 7 if same else 0


def contains_letter_e(problem: Problem, answer: str) -> int:
    """7 when the answer contains the letter "e" (either case), else 0: a toy reward for
    demos and notebooks, where the policy is too small to prove anything but a few RL
    steps can move this."""
    return 7 if "e" in answer.lower() else 0


def share_of_letter_e(problem: Problem, answer: str) -> int:
    """0..7 by the share of the letter "e" in the answer (70 x share, capped at 7): a
    toy reward that varies across a small model's samples, so groups have advantages
    to learn from (benchmarks, multi-process tests)."""
    return min(7, round(70 * answer.lower().count("e") / max(len(answer), 1)))
