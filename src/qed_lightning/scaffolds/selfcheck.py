"""Self-check: solve, improve, then verify and correct until the verdicts settle.

After arXiv 2507.15855 as the released evaluation runs it: a solution in a
"Summary / Detailed Solution" format, then a second turn of the same conversation asking
the model to improve it. Then a loop: a grader call verifies the detailed solution
(critical errors vs justification gaps, a summary then a step-by-step log); a second
call asks whether that report means the solution is correct (yes/no); a "no" makes a
correction call, a conversation in which the model's current solution is its own
earlier turn and the report's summary (the text before the "Detailed Verification"
log) is the user's reply. The loop stops after 5 passes in a row, 10 failures in a row
or 30 iterations, and the current solution is returned whichever way it stopped.
Calls per problem: 2 + 2 x 5 = 12 at least. The released notes give 2 + 3 x 30 = 92
as the most, but 10 failures in a row end the loop, so at these settings at most 90
calls can happen (28 failures and 2 passes in 30 iterations; :meth:`SelfCheck.max_calls`
computes the exact bound for any settings).

Deliberate differences from the released code:

- The yes/no answer is read from its last box (``\\boxed{yes}``/``\\boxed{no}``), else
  from its first word, with the report cut out first (:func:`parse_pass`); the
  released code passes any reply containing "yes" anywhere (so "no, ... eyes" passes).
  An unreadable, cut or failed answer counts as a failure, as a reply without "yes"
  does in the released code, and is counted (``checks_unparsed``, ``checks_unusable``).
- Under ``unusable_candidates: drop``: a verification that was cut, skipped or failed
  is a failure for the streaks without a yes/no or correction call (there is no report
  to judge or to correct against); a correction that was cut, skipped or failed is not
  taken, the current solution stays; a first solution that is unusable is not
  "improved": the second call is a fresh attempt instead. All counted
  (``reports_unusable``, ``corrections_unusable``, ``solutions_unusable``). ``keep``
  passes each reply on as it is (the released behaviour: often an empty text).
- The detailed solution handed to the grader starts on the line after the first
  "Detailed Solution" mention (the released code cuts right after those words, leaving
  heading markup such as "**").
"""
from __future__ import annotations

import re
from functools import lru_cache

from qed_lightning.scaffolds.base import (Call, ProblemContext, Reply, Scaffold, ScaffoldResult, Solve, Stage, fill,
                                          register_scaffold)
from qed_lightning.scaffolds.verdicts import drop_echoes, parse_choice

__all__ = ["SelfCheck", "bug_report", "detailed_solution", "parse_pass"]

SOLVE_SYSTEM = """You write solutions to competition mathematics problems.

Rules:
- Rigour comes first. Every step must follow logically and be explained; a correct final \
answer reached through flawed or incomplete reasoning counts as a failure.
- Be honest about how far you got. If you cannot solve the problem completely, do not present \
an argument that only looks complete. Present instead the substantial partial results you can \
prove rigorously: for example a key lemma, some cases of a case analysis settled completely, an \
essential property of the objects involved, or one bound of an optimisation problem without \
its attainment.
- Write all mathematics in TeX, e.g. `Let $n$ be a positive integer.`

Your response has exactly these two sections, in this order:

## Summary
a. Verdict: say whether you found a complete solution or a partial one; for a partial one, \
state precisely what you proved.
b. Method sketch: your strategy in a few sentences, the exact statements of the key lemmas and \
intermediate results, and the main constructions or case splits, so that an expert can follow \
the argument without the details.

## Detailed Solution
The whole proof, step by step, each step justified in enough detail for an expert to check it \
without filling any gap. This section holds the final proof only: no commentary, no \
alternative routes, no abandoned attempts.

Before you finish, reread your method sketch and detailed solution and make sure they are \
clean, rigorous and follow these instructions."""

IMPROVE_USER = """Now review your solution carefully and improve it: correct any errors and \
fill any gaps in the justification. Give the complete improved solution, following the rules \
and the format of the system prompt."""

CORRECT_USER = """Below is a reviewer's report on your solution. Where you agree with a point, \
revise the solution so that it becomes complete and rigorous. The reviewer may have \
misunderstood your solution: where you disagree with a point, keep your argument and explain it \
in more detail so that the misunderstanding cannot happen again. Give the complete revised \
solution, following the rules and the format of the system prompt.

{report}"""

VERIFY_SYSTEM = """You grade solutions to olympiad mathematics problems at IMO level, with \
great care. A solution counts as correct only when every step is rigorously justified; a \
correct answer reached through faulty reasoning, guesswork or gaps must be reported as \
incorrect or incomplete.

Your job is to find and report every issue in the solution, not to repair it: you verify, you \
do not solve. Check the whole solution, step by step.

Classify each issue you find:
- Critical error: an error that breaks the chain of reasoning, whether a logical fallacy or a \
false statement or calculation. Explain it and state that it invalidates this line of \
reasoning. Do not check the steps that depend on it, but do check the parts of the solution \
that are independent of it (for example the other cases of a case analysis).
- Justification gap: a step whose conclusion may be true but whose argument is incomplete, \
vague or not rigorous enough. Explain the gap, state that you assume the conclusion holds, and \
go on checking the steps that follow.

Your response has two sections:
1. Summary, at the very top: one sentence giving your final verdict on the solution's \
validity, then a bulleted list of every issue, each with its location (quote the key phrase or \
formula) and a short description with its class (critical error or justification gap).
2. Detailed Verification Log: the step-by-step check, quoting each part of the solution you \
discuss; a correct step needs a short justification, an issue a detailed explanation."""

VERIFY_USER = """### Problem

{problem}

### Solution

{solution}

### Your task

Grade this solution as described: write the summary, then the detailed verification log, \
justifying each correct step and explaining each error or gap in detail."""

CHECK_USER = """Below is a reviewer's report on a solution to a mathematics problem. Does the \
report find the solution correct, that is, free of critical errors and of major gaps in the \
justification? Answer yes or no, and end your response with \\boxed{yes} or \\boxed{no}.

{report}"""

_YES_NO = ("yes", "no")


def parse_pass(answer: str, shown: list[str] = ()) -> bool | None:
    """A yes/no answer: the last box if there is one (``\\boxed{yes}``/``\\boxed{no}``,
    any case), else the first word; None when neither is a clear yes or no. The texts
    in ``shown`` (the report asked about) are cut out first, so a verdict quoted from
    them cannot decide."""
    choice = parse_choice(answer, _YES_NO, shown=shown, tie_words=())
    if choice is not None:
        return choice == "yes"
    rest = drop_echoes(answer, shown)
    words = re.findall(r"[A-Za-z]+", rest)
    if "\\boxed" in rest or not words or words[0].lower() not in _YES_NO:
        return None  # a box that holds neither word is not overruled by the prose
    return words[0].lower() == "yes"


def _after_line_of(text: str, marker: str) -> str | None:
    at = text.find(marker)
    if at < 0:
        return None
    end = text.find("\n", at)
    return "" if end < 0 else text[end + 1:]


def detailed_solution(answer: str) -> str:
    """What the grader checks: the lines after the first line mentioning "Detailed
    Solution", stripped; the whole answer when there is no such line or nothing
    follows it."""
    rest = _after_line_of(answer, "Detailed Solution")
    return rest.strip() if rest and rest.strip() else answer.strip()


def bug_report(report: str) -> str:
    """What a correction is shown: the report before the line of its first "Detailed
    Verification" mention (the summary of findings), stripped; the whole report when
    there is no such line or nothing precedes it."""
    at = report.find("Detailed Verification")
    head = report[:report.rfind("\n", 0, at) + 1] if at >= 0 else ""
    return head.strip() or report.strip()


@lru_cache(maxsize=None)
def _most_calls(passes_to_stop: int, failures_to_stop: int, iterations: int) -> int:
    """The most calls the loop can make: a pass costs 2, a failure 3 (verify, yes/no,
    correction), and a streak that reaches its limit ends the loop."""

    @lru_cache(maxsize=None)
    def rest(i: int, passes: int, failures: int) -> int:
        if i == iterations:
            return 0
        on_pass = 2 + (0 if passes + 1 >= passes_to_stop else rest(i + 1, passes + 1, 0))
        on_failure = 3 + (0 if failures + 1 >= failures_to_stop else rest(i + 1, 0, failures + 1))
        return max(on_pass, on_failure)

    return 2 + rest(0, 0, 0)


@register_scaffold
class SelfCheck(Scaffold):
    """Solve, self-improve, then verify / judge the verdict / correct in a loop.

    Args:
        correct_count: Passes in a row that end the loop.
        error_count: Failures in a row that end the loop.
        max_iterations: Loop iterations at most.
        unusable_candidates: See ``Scaffold``.
    """

    name = "selfcheck"
    reference_calls = "12 to 90 (5 passes / 10 failures in a row, 30 iterations)"

    def __init__(self, correct_count: int = 5, error_count: int = 10, max_iterations: int = 30,
                 unusable_candidates: str = "drop") -> None:
        super().__init__(unusable_candidates)
        if correct_count < 1 or error_count < 1 or max_iterations < 0:
            raise ValueError("SelfCheck needs correct_count >= 1, error_count >= 1 and max_iterations >= 0; got "
                             f"correct_count={correct_count}, error_count={error_count}, "
                             f"max_iterations={max_iterations}")
        self.correct_count, self.error_count, self.max_iterations = correct_count, error_count, max_iterations

    def max_calls(self) -> int:
        return _most_calls(self.correct_count, self.error_count, self.max_iterations)

    def solve(self, ctx: ProblemContext) -> Solve:
        detail = {"iterations": 0, "passes": 0, "failures": 0, "corrections": 0, "solutions_unusable": 0,
                  "reports_unusable": 0, "checks_unusable": 0, "checks_unparsed": 0, "corrections_unusable": 0,
                  "verdicts": "", "stop": ""}
        [first] = yield Stage("solve", [Call.of(ctx.statement, system=SOLVE_SYSTEM)])
        if self._usable(first):
            improve = Call.of(IMPROVE_USER, system=SOLVE_SYSTEM, history=self._turn(ctx, first))
        else:
            detail["solutions_unusable"] += 1
            improve = Call.of(ctx.statement, system=SOLVE_SYSTEM)  # nothing to improve: a fresh attempt
        [improved] = yield Stage("improve", [improve])
        current = improved if self._usable(improved) else first if self._usable(first) else None
        if current is None:
            detail["solutions_unusable"] += 1
            return ScaffoldResult(None, "no usable solution to check", detail)
        passes = failures = 0
        detail["stop"] = "iterations"
        for it in range(1, self.max_iterations + 1):
            detail["iterations"] = it
            [report] = yield Stage(f"verify{it}", [Call.of(
                fill(VERIFY_USER, problem=ctx.statement, solution=detailed_solution(current.answer)),
                system=VERIFY_SYSTEM)])
            ok = False
            detail["reports_unusable"] += not report.usable
            if self._usable(report):
                [check] = yield Stage(f"check{it}", [Call.of(fill(CHECK_USER, report=report.answer))])
                verdict = parse_pass(check.answer, [report.answer]) if check.usable else None
                if not check.usable:
                    detail["checks_unusable"] += 1
                elif verdict is None:
                    detail["checks_unparsed"] += 1
                ok = bool(verdict)
            detail["verdicts"] += "P" if ok else "F"
            if ok:
                passes, failures = passes + 1, 0
                detail["passes"] += 1
            else:
                passes, failures = 0, failures + 1
                detail["failures"] += 1
                if self._usable(report):
                    [fixed] = yield Stage(f"correct{it}", [Call.of(
                        fill(CORRECT_USER, report=bug_report(report.answer)), system=SOLVE_SYSTEM,
                        history=self._turn(ctx, current))])
                    if self._usable(fixed):
                        current = fixed
                        detail["corrections"] += 1
                    else:
                        detail["corrections_unusable"] += 1
            if passes >= self.correct_count:
                detail["stop"] = "passes"
                break
            if failures >= self.error_count:
                detail["stop"] = "failures"
                break
        return ScaffoldResult(current, f"stopped on {detail['stop']} after {detail['iterations']} iterations",
                              detail)

    def _usable(self, reply: Reply) -> bool:
        return bool(self.candidates([reply]))

    @staticmethod
    def _turn(ctx: ProblemContext, solution: Reply) -> tuple[dict[str, str], ...]:
        """The problem and the model's solution to it as earlier turns; the assistant turn
        carries the answer only, never the reasoning before ``</think>``."""
        return ({"role": "user", "content": ctx.statement}, {"role": "assistant", "content": solution.answer})
