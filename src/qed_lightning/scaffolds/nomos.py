"""Nomos: many proofs, self-graded on the olympiad 0-7 scale, filtered, consolidated by
conclusion, then a pairwise knockout picks one.

Stages: ``solve`` (N proofs, the framed problem as the only user message), ``grade``
(one strict 0-7 self-grading call per candidate, the score in a box), a filter (if at
least ``target_perfect`` candidates scored 7, the perfect ones, at most ``max_kept``;
else the ``max_kept`` best), ``consolidate`` (one call shown every kept proof with its
grading feedback: group them by conclusion and name the group believed correct as
``<keep>[ids]</keep>``), then knockout rounds ``round0``, ``round1``... (pairs of a
seeded shuffle; each comparison ends ``<verdict>1|2|tie</verdict>``; an odd one out
goes through).

The released evaluation's settings: N = 16, 12 kept, 8 perfect needed: at most
16 + 16 + 1 + 11 = 44 calls per problem (``max_calls``). Deliberate deviations from
the released code, each counted in ``ScaffoldResult.detail``:

- A grading reply without a score is counted (``unscored``) and scored 0, as released;
  in the top-k filter it ranks after every real score, a real 0 included (the released
  code ranks it as a real 0). Equal scores keep the candidates' index order (the
  released stable sort does the same).
- The score, kept ids and verdict are read from the reply's final answer with the
  shown proofs cut out, last occurrence (``verdicts.py``); the released code takes the
  first match anywhere, so a score or verdict planted in a proof could decide.
- A ``<keep>`` list naming an id that was not shown is unparseable (the released code
  drops the unknown ids silently); an unparseable or failed consolidation keeps every
  kept proof (as released) and is counted (``keep_unparsed``).
- A tied or unparseable comparison is settled by a coin seeded by (run seed, problem,
  sample, round) and counted (``ties``, ``unparsed``); the released code flips an
  unseeded global coin for a tie and guesses from the digits after the word "verdict"
  when the tag is missing. The shuffle is seeded the same way (released: unseeded).
- Consolidation is skipped when one proof is kept (nothing to choose between); the
  released code asks anyway.
- A cut, skipped or failed proof is left out of every later stage with the default
  ``unusable_candidates: drop`` (counted ``dropped``: it is not graded, so the call
  count falls). With ``keep`` it goes on as released: an empty one is replaced by a
  note that it earns 0.
"""
from __future__ import annotations

from dataclasses import dataclass

from qed_lightning.scaffolds.base import (Call, ProblemContext, Reply, Scaffold, ScaffoldResult, Solve, Stage, fill,
                                          register_scaffold)
from qed_lightning.scaffolds.knockout import FIRST, SECOND, TIE, knockout
from qed_lightning.scaffolds.verdicts import parse_keep_ids, parse_score, parse_tag

__all__ = ["Nomos", "filter_candidates", "parse_grade", "parse_pair_verdict"]

SCALE = tuple(range(8))
PERFECT = 7

EMPTY_PROOF = "(No proof was returned for this submission; it must be scored 0.)"

GRADE_USER = """Grade a student's solution to an olympiad problem on the usual 0-7 scale. \
Judge only mathematical correctness, and be strict.

Problem:
{problem}

Student's solution:
<<<SOLUTION
{proof}
SOLUTION>>>

How to score. An olympiad score mostly says whether the problem was essentially solved \
(5, 6 or 7) or not (0, 1 or 2); 3 and 4 are for the rare case where it is honestly \
unclear which of the two holds.
- 7: a complete and correct solution; every claim is justified and every case covered.
- 6: complete apart from small omissions that do not threaten validity (an easy case \
left unchecked, a typo that does not propagate).
- 5 (rare): correct in substance, but one step that is not trivial needs a small repair; \
the conclusion clearly follows from what is written.
- 4 (rare): the way to the end is clear, but one significant, local step is unproven \
(a technical step, not a missing idea).
- 3 (rare): the key ideas are there, but finishing would need another nontrivial idea.
- 2: some correct, relevant work (a useful lemma, a valid partial computation) with \
large gaps left.
- 1: at least one correct statement that could plausibly be used in a solution.
- 0: nothing of use: wrong claims, a restated problem, irrelevant work, or no attempt.

Rules:
- Follow the argument line by line; check every computation and every logical step, and \
note each gap, unjustified leap or error.
- Ask first whether the problem is essentially solved; if so, start from 5-7 and deduct \
for gaps; if not, stay within 0-2 unless the case is truly borderline.
- Partial credit does not add up beyond 2: take the best single item, not the sum.
- A correct final answer without a valid argument earns 0.
- One arithmetic slip in an otherwise correct method usually costs one point; an error \
that breaks the logic means only the work before it counts.
- Missing cases: a case omitted that mirrors one solved correctly costs 1-2 points; \
otherwise judge by how much of the problem the missing cases carry, and at most 2 if \
the solution is fundamentally incomplete.
- Standard named theorems may be quoted without proof; claims specific to this problem \
must be proved unless trivial, and an unproved central claim is a heavy deduction.
- With several attempts, grade the best one, ignoring failed attempts that do not \
contradict it.
- A computational approach (e.g. coordinates) earns 7 only when carried through; an \
unfinished computation earns nothing beyond any synthetic observations it contains.

Write a short assessment: the approach, whether it is valid and complete, the errors \
or gaps you found, and which score band applies and why. Then give the score as a \
single integer in a box, \\boxed{score}, and write nothing after it."""

CONSOLIDATE_USER = """Several students submitted solutions to the same olympiad problem; \
each comes with a grader's assessment. Decide which submissions reach the correct \
conclusion and keep exactly those.

Problem:
{problem}

{submissions}

What to do:
1. Sort the submissions into groups by the final conclusion or answer they reach. Two \
submissions agree when their conclusions are the same or mathematically equivalent, \
however different their methods; they disagree when their answers differ or their \
conclusions contradict each other.
2. Decide which group's conclusion is correct. It need not be the largest group.
3. Keep every submission of that group and drop the others.

Write a brief analysis: the distinct conclusions, how many submissions reach each, and \
which group you believe is correct. Finish with the numbers of all submissions you keep \
in this exact form, e.g. <keep>[1, 3, 4]</keep> (or <keep>[2]</keep> for a single one)."""

PAIR_USER = """Two students submitted solutions to the same olympiad problem. Decide \
which of the two should be submitted, or whether they are equally good.

Problem:
{problem}

Submission 1:
<<<SUBMISSION 1
{first}
SUBMISSION 1>>>

Submission 2:
<<<SUBMISSION 2
{second}
SUBMISSION 2>>>

Decide by these criteria, in order:
1. Correctness: check the mathematics of each; a correct solution beats an incorrect one.
2. Completeness: a complete solution beats an incomplete one (every case handled, every \
claim justified, no logical gaps).
3. Errors: if both are flawed, prefer the one whose errors are fewer, less severe or \
easier to repair.
4. If they are still even, prefer the one you are more confident in.

Write a short comparison: each submission's approach and whether it holds, the \
differences that decide, and why. End with your verdict in exactly one of these forms: \
<verdict>1</verdict>, <verdict>2</verdict>, or <verdict>tie</verdict>."""


def parse_grade(reply: str, shown: str) -> int | None:
    """The 0-7 score in the last box of ``reply`` (the graded proof ``shown`` cut out
    first), or None."""
    score = parse_score(reply, SCALE, shown=[shown])
    return None if score is None else int(score)


def parse_pair_verdict(reply: str, shown: list[str]) -> str | None:
    """``"1"``, ``"2"`` or ``"tie"`` from the last ``<verdict>`` tag, or None."""
    body = parse_tag(reply, "verdict", shown)
    if body is None:
        return None
    body = body.strip().strip("*'\" ").lower()
    return body if body in ("1", "2", "tie") else None


@dataclass
class Candidate:
    index: int  # position in the solve stage
    reply: Reply
    shown: str  # the proof text later stages see
    score: int | None = None  # None: the grading reply had no score
    feedback: str = ""


def filter_candidates(scores: list[int | None], max_kept: int, target_perfect: int) -> tuple[list[int], str]:
    """Positions kept by the filter and which rule kept them (``perfect`` or ``top``).

    At least ``target_perfect`` perfect scores: the perfect ones in index order, at most
    ``max_kept``. Otherwise the ``max_kept`` best: higher score first, a real score
    before a missing one (counted 0), then index order.
    """
    perfect = [i for i, s in enumerate(scores) if s == PERFECT]
    if len(perfect) >= target_perfect:
        return perfect[:max_kept], "perfect"
    order = sorted(range(len(scores)), key=lambda i: (-(scores[i] or 0), scores[i] is None, i))
    return sorted(order[:max_kept]), "top"


@register_scaffold
class Nomos(Scaffold):
    """Self-graded filtering, consolidation by conclusion, and a pairwise knockout.

    Args:
        n_solutions: Proofs generated per problem.
        max_kept: The most proofs the filter keeps.
        target_perfect: Perfect (7) self-grades needed for the filter to keep only the
            perfect proofs; with fewer it keeps the ``max_kept`` best.
        unusable_candidates: See ``Scaffold``.
    """

    name = "nomos"
    reference_calls = "<= 44 (16 proofs, 12 kept, 8 perfect needed)"

    def __init__(self, n_solutions: int = 16, max_kept: int = 12, target_perfect: int = 8,
                 unusable_candidates: str = "drop") -> None:
        super().__init__(unusable_candidates)
        if n_solutions < 1 or max_kept < 1 or target_perfect < 1:
            raise ValueError(f"Nomos needs n_solutions, max_kept and target_perfect >= 1; got n_solutions="
                             f"{n_solutions}, max_kept={max_kept}, target_perfect={target_perfect}")
        self.n_solutions, self.max_kept, self.target_perfect = n_solutions, max_kept, target_perfect

    def max_calls(self) -> int:
        kept = min(self.n_solutions, self.max_kept)
        return 2 * self.n_solutions + (1 if kept > 1 else 0) + kept - 1

    def solve(self, ctx: ProblemContext) -> Solve:
        detail = {"dropped": 0, "unscored": 0, "scores": [None] * self.n_solutions, "filter": "", "kept": [],
                  "keep_unparsed": 0, "consolidated": [], "ties": 0, "unparsed": 0, "winner": None}
        replies = yield Stage("solve", [Call.of(ctx.statement)] * self.n_solutions)
        usable = self.candidates(replies)
        detail["dropped"] = len(replies) - len(usable)
        pool = [Candidate(i, replies[i], replies[i].answer if replies[i].answer.strip() else EMPTY_PROOF)
                for i in usable]
        if not pool:
            return ScaffoldResult(None, "no usable proof among the candidates", detail)

        grades = yield Stage("grade", [Call.of(fill(GRADE_USER, problem=ctx.statement, proof=c.shown)) for c in pool])
        for c, g in zip(pool, grades):
            c.score = parse_grade(g.answer, c.shown) if g.error is None else None
            c.feedback = g.answer.strip()
            detail["unscored"] += c.score is None
            detail["scores"][c.index] = c.score
        keep, detail["filter"] = filter_candidates([c.score for c in pool], self.max_kept, self.target_perfect)
        pool = [pool[i] for i in keep]
        detail["kept"] = [c.index for c in pool]

        if len(pool) > 1:
            prompt = fill(CONSOLIDATE_USER, problem=ctx.statement, submissions=self._submissions(pool))
            [reply] = yield Stage("consolidate", [Call.of(prompt)])
            shown = [c.shown for c in pool] + [c.feedback for c in pool]
            ids = parse_keep_ids(reply.answer, range(1, len(pool) + 1), shown) if reply.error is None else None
            if ids is None:
                detail["keep_unparsed"] += 1
            else:
                pool = [pool[i - 1] for i in ids]
        detail["consolidated"] = [c.index for c in pool]

        def compare(a: Candidate, b: Candidate) -> Call:
            return Call.of(fill(PAIR_USER, problem=ctx.statement, first=a.shown, second=b.shown))

        def read(reply: Reply, a: Candidate, b: Candidate) -> str | None:
            return {"1": FIRST, "2": SECOND, "tie": TIE}.get(parse_pair_verdict(reply.answer, [a.shown, b.shown]))

        winner = yield from knockout(ctx, pool, "round", compare, read, detail)
        detail["winner"] = winner.index
        return ScaffoldResult(winner.reply, "consolidation and pairwise knockout", detail)

    @staticmethod
    def _submissions(pool: list[Candidate]) -> str:
        parts = []
        for k, c in enumerate(pool, 1):
            feedback = c.feedback or "(no assessment was returned)"
            parts.append(f"=== Submission {k} ===\n{c.shown}\n=== End of submission {k} ===\n"
                         f"Grader's assessment of submission {k}:\n{feedback}")
        return "\n\n".join(parts)
