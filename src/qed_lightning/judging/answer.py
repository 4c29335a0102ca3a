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

# A self-evaluation *section*: a line that is only a heading-like "Self Evaluation"
# (markdown heading, bold, or a label ending in a colon). An inline mention of
# self-evaluation inside a sentence does not start a section.
_SELF_EVAL_HEADING = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*|\*\*[ \t]*|__[ \t]*)?self[- ]?evaluation\b[^\n]{0,40}$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class ExtractedAnswer:
    """``text`` is what the grader sees; ``skip`` is set ("truncated" or "empty")
    when there is nothing to grade and the item scores 0 without a call."""

    text: str
    skip: str | None = None


def strip_self_evaluation(text: str) -> str:
    """Removes a trailing self-evaluation section (from its last heading to the end)."""
    matches = list(_SELF_EVAL_HEADING.finditer(text))
    if not matches:
        return text
    return text[: matches[-1].start()]


def extract_answer(completion: str, mode: str = "after_think", strip_self_eval: bool = True) -> ExtractedAnswer:
    """The part of ``completion`` a judge should grade.

    Args:
        completion: The policy's full completion text.
        mode: ``"after_think"`` grades the text after the last ``</think>`` and treats
            a missing ``</think>`` as truncated; ``"whole"`` grades everything (for
            models that do not think, such as the demo model).
        strip_self_eval: Remove a trailing self-evaluation section.
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
