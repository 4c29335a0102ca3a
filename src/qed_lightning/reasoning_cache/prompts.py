"""The two user messages of a reasoning-cache cycle: the reasoning turn (problem plus the
summary of earlier attempts) and the summary turn (problem, earlier summary, new
reasoning -> a summary that replaces the earlier one).

Each turn has a first form used while there is no summary yet, so the first attempt
reads as a plain request rather than as a reference to an empty summary. Templates are
plain strings with ``{problem}``, ``{summary}`` and ``{reasoning}`` placeholders, filled
in one pass: braces elsewhere (LaTeX, a problem that itself contains ``{summary}``) are
left alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FIRST_REASONING_PROMPT",
    "FIRST_SUMMARY_PROMPT",
    "REASONING_PROMPT",
    "SUMMARY_PROMPT",
    "RCPrompts",
    "fill_template",
    "reasoning_prompt",
    "summary_prompt",
]

_PLACEHOLDER = re.compile(r"\{(problem|summary|reasoning)\}")

_PROOF_REQUEST = (
    "Reason step by step: try ideas, check every claim, and drop what does not work. "
    "Finish with a complete, rigorous proof, written out in full."
)

FIRST_REASONING_PROMPT = "Give a rigorous proof for the following problem.\n\n{problem}\n\n" + _PROOF_REQUEST

REASONING_PROMPT = (
    "Give a rigorous proof for the following problem.\n\n{problem}\n\n"
    "This problem has been attempted before. Here is a first-person summary of the "
    "earlier work:\n\n<summary>\n{summary}\n</summary>\n\n"
    "Improve on that attempt. Verify its steps rather than trusting them, and repair any "
    "that fail. If its approach is stuck, look for a different proof or another strategy; "
    "if it stopped part way, continue from where it stopped. " + _PROOF_REQUEST
)

_SUMMARY_HEAD = "Write a summary of this work for whoever attempts the problem next:\n"
_SUMMARY_RULES = (
    "- Describe the strategy in detail: the key ideas, the theorems and lemmas used, the "
    "calculations, and what was checked and found to hold or to fail.\n"
    "- If the work is unfinished or wrong in places, summarise the partial progress "
    "anyway and say where it stopped or broke down.\n"
    "- Report only what the text above contains: do not add reasoning, steps or claims "
    "of your own.\n"
    "- Write prose in the first person, as the solver (\"I showed...\", \"I tried...\"), "
    "in at most two paragraphs.\n\n"
    "Reply with the summary alone."
)

FIRST_SUMMARY_PROMPT = (
    "Below are a maths problem and a solver's reasoning about it.\n\n"
    "<problem>\n{problem}\n</problem>\n\n<reasoning>\n{reasoning}\n</reasoning>\n\n"
    + _SUMMARY_HEAD + _SUMMARY_RULES
)

SUMMARY_PROMPT = (
    "Below are a maths problem, a summary of a solver's earlier work on it, and the "
    "solver's latest reasoning.\n\n"
    "<problem>\n{problem}\n</problem>\n\n<earlier_summary>\n{summary}\n</earlier_summary>\n\n"
    "<reasoning>\n{reasoning}\n</reasoning>\n\n"
    + _SUMMARY_HEAD
    + "- Your summary replaces the earlier one: keep everything in it that still matters, "
    "and say how the latest reasoning relates to it (what it confirms, corrects or extends).\n"
    + _SUMMARY_RULES
)


def fill_template(template: str, values: dict[str, str], required: tuple[str, ...]) -> str:
    """``template`` with each ``{name}`` of ``values`` substituted in one pass.

    Raises ValueError when a name in ``required`` has no placeholder in the template.
    """
    if missing := [name for name in required if "{" + name + "}" not in template]:
        raise ValueError(f"RC prompt template lacks {['{%s}' % m for m in missing]}: {template[:80]!r}...")
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _has_summary(summary: str | None) -> bool:
    return bool(summary and summary.strip())


def reasoning_prompt(problem: str, summary: str | None, template: str = REASONING_PROMPT,
                     first_template: str = FIRST_REASONING_PROMPT) -> str:
    """The reasoning turn's user message; ``first_template`` when ``summary`` is empty."""
    if not _has_summary(summary):
        return fill_template(first_template, {"problem": problem, "summary": ""}, ("problem",))
    return fill_template(template, {"problem": problem, "summary": summary}, ("problem", "summary"))


def summary_prompt(problem: str, summary: str | None, reasoning: str, template: str = SUMMARY_PROMPT,
                   first_template: str = FIRST_SUMMARY_PROMPT) -> str:
    """The summary turn's user message; ``first_template`` when ``summary`` is empty."""
    values = {"problem": problem, "summary": summary or "", "reasoning": reasoning}
    if not _has_summary(summary):
        return fill_template(first_template, values, ("problem", "reasoning"))
    return fill_template(template, values, ("problem", "summary", "reasoning"))


@dataclass(frozen=True)
class RCPrompts:
    """The four templates of a cycle, checked when built (not at the first batch)."""

    reasoning: str = REASONING_PROMPT
    first_reasoning: str = FIRST_REASONING_PROMPT
    summary: str = SUMMARY_PROMPT
    first_summary: str = FIRST_SUMMARY_PROMPT

    def __post_init__(self) -> None:
        reasoning_prompt("p", "s", self.reasoning, self.first_reasoning)
        reasoning_prompt("p", "", self.reasoning, self.first_reasoning)
        summary_prompt("p", "s", "r", self.summary, self.first_summary)
        summary_prompt("p", "", "r", self.summary, self.first_summary)

    def reason(self, problem: str, summary: str | None) -> str:
        return reasoning_prompt(problem, summary, self.reasoning, self.first_reasoning)

    def summarize(self, problem: str, summary: str | None, reasoning: str) -> str:
        return summary_prompt(problem, summary, reasoning, self.summary, self.first_summary)
