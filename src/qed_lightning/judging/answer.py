"""What a judge grades: the final answer cut out of a completion.

Pure functions, shared by every judge backend. A thinking model's completion is
``<think>...</think> answer``; only the answer is graded (the paper grades the text
after the last ``</think>``). A completion without ``</think>`` ran out of tokens
while thinking and scores 0 with no grader call, as does an empty answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ANSWER_MODES", "ExtractedAnswer", "extract_answer", "strip_self_evaluation"]

THINK_END = "</think>"
ANSWER_MODES = ("after_think", "whole")

# A self-evaluation heading, as the paper's evaluation recognises one: a line starting
# with "#"s, then (spaces and "*" allowed between the words) up to two of "Self" and
# "Final", then the word "Evaluation"; case-sensitive. "## Self Evaluation",
# "### Final Evaluation", "# Evaluation", "## **Self Evaluation**" are headings;
# "**Self Evaluation**" without "#", "## Self-Evaluation" and a sentence are not.
_SELF_EVAL_HEADING = re.compile(r"^#+[\s*]*(?:(?:Self|Final)[\s*]*){0,2}Evaluation\b", re.MULTILINE)


@dataclass(frozen=True)
class ExtractedAnswer:
    """``text`` is what the grader sees; ``skip`` is set ("truncated" or "empty")
    when there is nothing to grade and the item scores 0 without a call."""

    text: str
    skip: str | None = None


def strip_self_evaluation(text: str) -> str:
    """Everything before the first self-evaluation heading, stripped (the whole text,
    stripped, when there is none)."""
    heading = _SELF_EVAL_HEADING.search(text)
    return (text if heading is None else text[: heading.start()]).strip()


def extract_answer(completion: str, mode: str = "after_think", strip_self_eval: bool = True) -> ExtractedAnswer:
    """The part of ``completion`` a judge should grade.

    Args:
        completion: The policy's full completion text.
        mode: ``"after_think"`` grades the text after the last ``</think>`` and treats
            a missing ``</think>`` as truncated; ``"whole"`` grades everything (for
            models that do not think, such as the demo model).
        strip_self_eval: Cut at the first self-evaluation heading (the paper's
            evaluation protocol; see ``strip_self_evaluation``).
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"answer mode must be one of {ANSWER_MODES}, got {mode!r}")
    if mode == "after_think":
        cut = completion.rfind(THINK_END)
        if cut < 0:
            return ExtractedAnswer("", skip="truncated")
        text = completion[cut + len(THINK_END):]
    else:
        text = completion
    if strip_self_eval:
        text = strip_self_evaluation(text)
    text = text.strip()
    return ExtractedAnswer(text, skip=None if text else "empty")
