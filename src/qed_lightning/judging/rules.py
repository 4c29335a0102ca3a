"""Built-in scoring rules for :class:`~qed_lightning.judging.rule_judge.RuleJudge`."""
from __future__ import annotations

from qed_lightning.contracts import Problem

__all__ = ["boxed_answer_matches", "contains_letter_e", "last_boxed"]


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None  # unbalanced: the answer was cut off


def boxed_answer_matches(problem: Problem, answer: str) -> int:
    """7 if the last ``\\boxed{}`` equals ``problem.metadata["answer"]`` (ignoring
    whitespace), else 0. Raises if the problem has no answer to compare with."""
    if "answer" not in problem.metadata:
        raise KeyError(f"problem {problem.id!r} has no metadata['answer'] to check against")
    boxed = last_boxed(answer)
    if boxed is None:
        return 0
    return 7 if "".join(boxed.split()) == "".join(str(problem.metadata["answer"]).split()) else 0


def contains_letter_e(problem: Problem, answer: str) -> int:
    """7 when the answer contains the letter "e" (either case), else 0: a toy reward for
    demos and notebooks, where the policy is too small to prove anything but a few RL
    steps can move this."""
    return 7 if "e" in answer.lower() else 0
