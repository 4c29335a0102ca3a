"""The prompts of ``qed data rubrics`` and ``qed data filter``, in this project's own
words (the roles and rules follow the released QED-Nano pipeline; see docs/data.md,
"Building datasets"). Placeholders are filled in one pass (``placeholders.fill``), never with
``str.format``: problems and proofs are full of braces."""
from __future__ import annotations

__all__ = ["FILTER_PROMPT", "RUBRIC_PROMPT"]

RUBRIC_PROMPT = """You are preparing the marking scheme an olympiad coordinator will use to grade \
contestants' proofs of the problem below. The official solution is correct and is your reference.

Problem:
{problem}

Official solution:
{solution}

Write exactly three sections, in this order and with these headings:

## Checkpoints (7 points total)
One line per checkpoint, each starting with its points in parentheses, e.g. "- (2 pts) ...".
Points are whole numbers and add up to exactly 7. Give at least 4 points to the ideas that \
crack the problem and at most 3 to routine steps. Do not split the credit into many tiny \
pieces. If the official solution admits genuinely different routes, write one block per route, \
each block opened by a line "Chain A", "Chain B", ...; a proof earns the points of its best \
chain only (chains are never added together), and every chain totals 7 together with the \
checkpoints listed before the first chain. Close the section with a line "Total: 7 points".

## Zero credit
Work that earns nothing on its own (restating the problem, checking small cases, claims \
without argument), one item per line.

## Deductions
Penalties for flaws in otherwise creditworthy work, one per line, each either "-1", "-2" \
or "cap at x/7". Do not deduct for a proof that is incomplete but sound: it simply earns \
fewer checkpoints.

Define any notation you use. Write nothing before the first heading."""

FILTER_PROMPT = """You are screening olympiad problems, each with a proposed solution and \
possibly readers' comments, before they are used to train a model to write proofs.

Problem:
{problem}

Proposed solution:
{solution}

Comments:
{comments}

Judge the material and answer with a single JSON object in a ```json fenced block, with \
exactly these keys:
- "incomplete": true if the problem statement or the solution is missing essential parts.
- "difficulty": an integer from 1 to 10 (1: an easy contest question, 4: a national \
olympiad problem, 7: among the hardest national or easiest IMO problems, 10: the hardest \
IMO problems).
- "gaps": true if the solution skips major steps as if they were obvious.
- "wrong": true if the solution says the statement is false or ambiguous as written.
- "disagreement": true if the comments dispute the solution.
- "computational": true if the main difficulty is computing a number or expression rather \
than proving a statement."""
