"""DSM, the DeepSeekMath-V2-style agent: proofs with honest self-evaluations, each
verified several times against a 3-level rubric, the best ones refined with their
harshest reviews, the best-verified proof returned.

The released evaluation's settings: a pool of 4 proofs, 4 verifications per proof
(score = their mean), at most 2 refinement rounds, each refining the 4 best proofs of
the whole pool (old and new) with the 2 lowest-scoring reviews of each and verifying
the 4 refinements; a round is not started once some proof was scored 1 by every
verification. Calls per problem: 4 + 16 + 2 x (4 + 16) = 60 at most, 20 when a perfect
proof appears at once. The proof handed on to verifiers and refiners is the text
between the "## Solution" and "## Self Evaluation" headings of the answer
(:func:`extract_proof`, with the released fallbacks).

Deliberate differences from the released code:

- A verification that gives no 0/0.5/1 in a box, or that was cut, skipped or failed,
  scores 0 as in the released code (under either ``unusable_candidates``: a verdict is
  not a candidate), but is counted (``verifications_unparsed``,
  ``verifications_unusable``). Leaving it out of the mean instead would let a single
  readable "1" stop the search (the stop rule means "every verifier gave 1"). The
  score is read from the *last* box of the verifier's answer with the shown proof cut
  out (the released code takes the first box anywhere, so a proof's own boxed "1"
  quoted by the verifier could decide).
- Ranking for refinement orders by mean score, ties going to the newer proof (a
  refinement that scores as well as its parent goes first); the released
  ``np.argsort`` leaves ties to the sort implementation. The answer is the best mean
  over the pool, ties going to the earlier proof (as ``np.argmax``).
- A proof that was cut, skipped or failed, or whose extracted proof is empty, is left
  out of the pool under ``unusable_candidates: drop`` (counted, and not verified, so
  fewer calls); ``keep`` verifies it as the released code does (an empty proof becomes
  :data:`EMPTY_PROOF`). A refinement is shown only usable reviews under ``drop``.
- The self-evaluation heading is looked for after the solution heading only.
- The graded reply is the chosen generation's whole text, graded as a single-turn
  sample is (the judge cuts the answer at its self-evaluation heading), so the graded
  text is one of the calls' texts; the released agent returns only the extracted proof
  (the two differ by what precedes the "## Solution" heading, and by a self-evaluation
  under a heading the judge does not recognise).
- The released agent can send verification and refinement to other models
  (``verifier_model``, ``improver_model``); here every call goes to the model under
  evaluation (one generation backend per run), so that option is not offered.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from qed_lightning.scaffolds.base import (Call, ProblemContext, Reply, Scaffold, ScaffoldResult, Solve, Stage, fill,
                                          register_scaffold)
from qed_lightning.scaffolds.verdicts import parse_score

__all__ = ["DSM", "EMPTY_PROOF", "extract_proof"]

SCORES = (0.0, 0.5, 1.0)
EMPTY_PROOF = "[No proof was given: this solution must be scored 0.]"

RUBRIC = """- Score 1: the solution is complete and correct; every step is carried out and clearly justified.
- Score 0.5: the solution is correct in substance but leaves out some details or has minor errors.
- Score 0: the solution does not solve the problem asked, has a fatal error, or leaves out an essential part.
A result taken from the literature must be proved within the solution. A solution that relies on a \
reference without a complete, correct proof of it is scored by the rules above, and never 1."""

GENERATE_USER = """Solve the problem below. If it asks for an answer, find the answer and prove \
rigorously that it is correct; if it asks for a proof, give a complete proof.

Your solution will be graded with this rubric:

{rubric}

You are able to apply this rubric yourself. Work out a solution, grade it against the rubric, \
look for its weak points and repair them, and repeat until you can improve it no further.

Write your final response in two parts, under these two headings:

## Solution
The complete solution, clear enough for an expert to check every step.

## Self Evaluation
An honest grading of that solution against the rubric. Name every issue you found and could not \
resolve, and end with your score in a box: \\boxed{1}, \\boxed{0.5} or \\boxed{0}. Give 1 only \
if a careful check found no issue at all. Reporting unresolved issues faithfully is a good \
response; presenting a flawed solution as correct, or calling it correct without checking it, \
is the worst response there is.

## Problem

{problem}"""

VERIFY_USER = """Grade the solution below against this rubric:

{rubric}

Check the solution step by step. Discuss in detail its key steps and every step whose \
correctness you doubted: for a step that holds, say why you doubted it and why it is right; for \
a step that fails, say what is wrong and what the error does to the rest of the solution. \
Finish with the overall score, 0, 0.5 or 1 and nothing else, in a box as the last thing you \
write: \\boxed{0}, \\boxed{0.5} or \\boxed{1}.

## Problem

{problem}

## Solution

{proof}"""

REFINE_USER = """{task}

## An earlier solution and its reviews

Below is an earlier solution to this problem with reviews of it. Write a better solution: \
resolve the issues the reviews raise, reuse the ideas of the earlier solution that look \
promising, or both. Your response takes the same two-part form as asked above.

### Earlier solution

{proof}

### Reviews
{reports}"""

# Headings of the generation format; the fallbacks follow the released extraction.
_SOLUTION_HEADING = re.compile(r"##\s*solution", re.IGNORECASE)
_SELF_EVAL_HEADING = re.compile(r"##\s*self\s*evaluation", re.IGNORECASE)
_SELF_EVAL_WORDS = re.compile(r"self\s*evaluation", re.IGNORECASE)


def extract_proof(answer: str) -> str:
    """The proof in a generation's answer: the text after the first "## Solution"
    heading and before the first "## Self Evaluation" heading after it (any case and
    spacing). Fallbacks: without that heading, the first mention of "self evaluation"
    after the start ends it; without a start heading the proof starts at the top;
    without an end it runs to the end. Stripped; may be ``""``."""
    start = _SOLUTION_HEADING.search(answer)
    begin = start.end() if start else 0
    end = _SELF_EVAL_HEADING.search(answer, begin) or _SELF_EVAL_WORDS.search(answer, begin)
    return answer[begin:end.start() if end else len(answer)].strip()


def show_reports(reports: list[str]) -> str:
    return "".join(f"\n#### Review {i + 1}\n\n{r}\n" for i, r in enumerate(reports))


@dataclass
class _Proof:
    """A pool member: its generation, the proof cut out of it, and its verifications."""

    reply: Reply
    proof: str
    parent: int | None  # pool index of the proof it refines
    scores: list[float] = field(default_factory=list)
    reports: list[Reply] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


@register_scaffold
class DSM(Scaffold):
    """Verify-and-refine after DeepSeekMath-V2.

    Args:
        pool_size: Proofs generated at first, and proofs refined per round.
        verifications: Verification calls per proof; its score is their mean.
        reports_per_refinement: The lowest-scoring reviews shown with each proof
            that is refined.
        iterations: Refinement rounds at most (0: generate and verify only).
        unusable_candidates: See ``Scaffold``.
    """

    name = "dsm"
    reference_calls = "at most 60 (pool 4, 4 verifications, 2 refinement rounds); 20 with an early stop"

    def __init__(self, pool_size: int = 4, verifications: int = 4, reports_per_refinement: int = 2,
                 iterations: int = 2, unusable_candidates: str = "drop") -> None:
        super().__init__(unusable_candidates)
        if pool_size < 1 or verifications < 1 or reports_per_refinement < 1 or iterations < 0:
            raise ValueError("DSM needs pool_size, verifications and reports_per_refinement >= 1 and iterations >= 0; "
                             f"got pool_size={pool_size}, verifications={verifications}, "
                             f"reports_per_refinement={reports_per_refinement}, iterations={iterations}")
        self.pool_size, self.verifications = pool_size, verifications
        self.reports_per_refinement, self.iterations = reports_per_refinement, iterations

    def max_calls(self) -> int:
        return (1 + self.iterations) * self.pool_size * (1 + self.verifications)

    def solve(self, ctx: ProblemContext) -> Solve:
        detail = {"dropped": 0, "empty_proofs": 0, "verifications_unusable": 0, "verifications_unparsed": 0,
                  "rounds": 0, "stopped_early": False, "refined": [], "scores": [], "parents": []}
        task = fill(GENERATE_USER, rubric=RUBRIC, problem=ctx.statement)
        replies = yield Stage("generate", [Call.of(task)] * self.pool_size)
        pool = self._admit(replies, [None] * len(replies), detail)
        yield from self._verify(ctx, pool, "verify0", detail)
        for it in range(1, self.iterations + 1):
            if not pool:
                break
            if any(p.mean >= 1.0 for p in pool):
                detail["stopped_early"] = True
                break
            # the best of the whole pool, old and new; ties: the newer proof first
            ranked = sorted(range(len(pool)), key=lambda i: (pool[i].mean, i), reverse=True)[:self.pool_size]
            calls = [Call.of(fill(REFINE_USER, task=task, proof=pool[i].proof,
                                  reports=show_reports(self._harshest(pool[i])))) for i in ranked]
            detail["refined"].append(ranked)
            new = self._admit((yield Stage(f"refine{it}", calls)), ranked, detail)
            yield from self._verify(ctx, new, f"verify{it}", detail)
            pool += new
            detail["rounds"] = it
        detail["scores"] = [p.scores for p in pool]
        detail["parents"] = [p.parent for p in pool]
        if not pool:
            return ScaffoldResult(None, "no usable proof in the pool", detail)
        best = max(range(len(pool)), key=lambda i: (pool[i].mean, -i))  # ties: the earlier proof
        detail["best"] = best
        return ScaffoldResult(pool[best].reply, f"best mean verification score {pool[best].mean:g}", detail)

    def _admit(self, replies: list[Reply], parents: list[int | None], detail: dict) -> list[_Proof]:
        """The pool members made from ``replies`` (per ``unusable_candidates``)."""
        keep = self.candidates(replies)
        detail["dropped"] += len(replies) - len(keep)
        admitted = []
        for i in keep:
            proof = extract_proof(replies[i].answer)
            if not proof:
                detail["empty_proofs"] += 1
                if self.unusable_candidates == "drop":
                    continue
                proof = EMPTY_PROOF
            admitted.append(_Proof(replies[i], proof, parents[i]))
        return admitted

    def _verify(self, ctx: ProblemContext, proofs: list[_Proof], stage: str, detail: dict):
        if not proofs:
            return
        calls = [Call.of(fill(VERIFY_USER, rubric=RUBRIC, problem=ctx.statement, proof=p.proof))
                 for p in proofs for _ in range(self.verifications)]
        replies = yield Stage(stage, calls)
        for k, reply in enumerate(replies):
            proof = proofs[k // self.verifications]
            score = None
            if reply.error is not None or reply.truncated:
                detail["verifications_unusable"] += 1
            else:
                score = parse_score(reply.answer, SCORES, shown=[proof.proof])
                detail["verifications_unparsed"] += score is None
            proof.scores.append(0.0 if score is None else score)
            proof.reports.append(reply)

    def _harshest(self, proof: _Proof) -> list[str]:
        """The texts of the lowest-scoring reviews of ``proof`` (ties: the earlier)."""
        usable = self.candidates(proof.reports)
        order = sorted(usable, key=lambda j: proof.scores[j])
        return [proof.reports[j].answer for j in order[:self.reports_per_refinement]]

