"""How AnswerBench answers become scores: the paper's protocol or our rule checker.

``paper`` (the released evaluation): the answer is the text after ``</think>`` cut at
the first self-evaluation heading; the LLM grader (the ``answer_match`` template)
compares its final boxed answer with the reference, and an answer without a box (or
with an empty one) is not a 0: the grader gets its last five lines instead. Our rule
checker runs first and settles only what it is certain of, a definite match (7, no
grader call); every other answer, mismatches included, goes to the grader.
``paper_grader_only`` is the same without that first pass. ``checker`` is our faster
protocol: the checker decides matches and mismatches, no box is a 0, and the grader is
asked only about answers the checker cannot compare (or nobody is, without a judge).

Every protocol returns ``(answer, score, error, origin)`` per generation, ``answer``
being what was graded and ``score`` None for a counted failure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from qed_lightning.contracts import GradingItem, Problem
from qed_lightning.evaluation.answer_check import answers_match, check_answer, last_boxed
from qed_lightning.evaluation.records import MAX_SCORE
from qed_lightning.judging.answer import extract_answer
from qed_lightning.judging.base import BaseJudge

__all__ = ["ANSWER_PROTOCOLS", "AnswerProtocol", "grader_text"]

Scored = tuple[str, int | None, str | None, str]
FALLBACK_LINES = 5  # what the released evaluation sends the grader when there is no box


def grader_text(answer: str) -> str:
    """What the grader is shown for one answer: its final boxed answer, or without one
    its last ``FALLBACK_LINES`` lines after "..." (the whole answer when shorter)."""
    boxed = last_boxed(answer)
    if boxed:
        return boxed
    lines = answer.strip().split("\n")
    return "..." + "\n".join(lines[-FALLBACK_LINES:]) if len(lines) >= FALLBACK_LINES else answer


def _reference(problem: Problem) -> str:
    return str(problem.metadata.get("short_answer", ""))


def _ask(judge: BaseJudge, out: list, asks: list[tuple[int, GradingItem]], origin: str | None = None) -> None:
    """Grades the collected items in one batch and fills their slots of ``out``."""
    if not asks:
        return
    for (i, _), v in zip(asks, judge.grade([item for _, item in asks]), strict=True):
        out[i] = (out[i][0], v.score, v.error, origin or v.origin)


def _item(problem: Problem, shown: str) -> GradingItem:
    # the judge sees the short answer as the reference and ``shown`` as the text to check
    return GradingItem(dataclasses.replace(problem, reference_solution=_reference(problem)), shown)


def _grade_paper(chunk, by_id, judge, answer_mode, first_pass: bool = True) -> list[Scored]:
    out: list[Scored] = []
    asks: list[tuple[int, GradingItem]] = []
    for g in chunk:
        if g.get("error"):  # no text came back: a counted failure, not a 0
            out.append(("", None, f"generation: {g['error']}", "generation"))
            continue
        problem = by_id[g["problem_id"]]
        extracted = extract_answer(g["text"], mode=answer_mode)  # self-evaluation cut, as released
        if extracted.skip:  # truncated or empty: 0 without a call
            out.append(("", 0, None, "no_answer"))
            continue
        boxed = last_boxed(extracted.text)
        if first_pass and boxed and answers_match(boxed, _reference(problem)) is True:
            out.append((boxed, MAX_SCORE, None, "checker"))
            continue
        shown = grader_text(extracted.text)
        asks.append((len(out), _item(problem, shown)))
        out.append((shown, None, "not graded", "judge"))
    _ask(judge, out, asks)
    return out


def _grade_checker(chunk, by_id, judge, answer_mode) -> list[Scored]:
    out: list[Scored] = []
    asks: list[tuple[int, GradingItem]] = []
    for g in chunk:
        if g.get("error"):
            out.append(("", None, f"generation: {g['error']}", "generation"))
            continue
        problem = by_id[g["problem_id"]]
        check = check_answer(extract_answer(g["text"], mode=answer_mode).text, _reference(problem))
        if check.correct is not None:
            out.append((check.extracted or "", MAX_SCORE if check.correct else 0, None,
                        "no_box" if check.reason == "no_box" else "checker"))
            continue
        if judge is not None:
            asks.append((len(out), _item(problem, check.extracted or "")))
        out.append((check.extracted or "", None, "undecided: the checker cannot compare these answers "
                    "(set a judge for the fallback)", "undecided"))
    if judge is not None:
        _ask(judge, out, asks, origin="judge_fallback")
    return out


@dataclass(frozen=True)
class AnswerProtocol:
    """One way of scoring answers.

    Attributes:
        grade: ``(generations, problems by id, judge, answer_mode) -> [(answer, score, error, origin)]``.
        needs_judge: Every answer may reach the judge, so one must be set.
        label: Appended to the grader's name in each record's ``judge`` field (the
            report's Judge column), so a number says which protocol produced it.
    """

    grade: Callable[..., list[Scored]]
    needs_judge: bool
    label: str

    def check(self, name: str, judge: BaseJudge | None) -> None:
        """Raises before any generation when ``judge`` cannot serve this protocol."""
        if judge is None:
            if self.needs_judge:
                raise ValueError(f"answer_protocol {name!r} grades answers with an LLM judge: set judge (an LLMJudge "
                                 f"with template answer_match), or answer_protocol: checker (the rule checker alone, "
                                 f"not the paper's protocol)")
            return
        if getattr(judge, "answer_mode", "whole") != "whole":
            # it is given an extracted answer, which has no </think>: after_think would score all 0 unasked
            raise ValueError(f"answer_protocol {name!r}: the judge is given extracted answers, so it needs "
                             f"answer_mode: whole (got {judge.answer_mode!r})")


def _paper_grader_only(chunk, by_id, judge, answer_mode) -> list[Scored]:
    return _grade_paper(chunk, by_id, judge, answer_mode, first_pass=False)


ANSWER_PROTOCOLS: dict[str, AnswerProtocol] = {
    "paper": AnswerProtocol(_grade_paper, True, "paper protocol"),
    "paper_grader_only": AnswerProtocol(_paper_grader_only, True, "paper protocol, grader only"),
    "checker": AnswerProtocol(_grade_checker, False, "checker protocol"),
}
