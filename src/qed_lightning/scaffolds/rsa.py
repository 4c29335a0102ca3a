"""RSA, recursive self-aggregation: a population of proofs merged in groups, round after
round, then a pairwise knockout picks one.

The released evaluation's settings: N = 8 proofs, T = 3 rounds of N groups of K = 3
distinct members (every member in exactly K groups), then 8 -> 4 -> 2 -> 1 pairwise
comparisons: N + T*N + (N - 1) = 39 calls per problem. Two of its choices are changed
on purpose: the groups are drawn from a generator seeded by (run seed, problem, sample,
round), where the released code seeds by the round alone (every problem and run then
gets the same group structure); and an unparseable or tied comparison is settled by a
seeded coin and counted, where the released code lets the second candidate win (a bias
toward whichever proof is shown second).
"""
from __future__ import annotations

from qed_lightning.scaffolds.base import (Call, ProblemContext, Reply, Scaffold, ScaffoldResult, Solve, Stage, fill,
                                          register_scaffold)
from qed_lightning.scaffolds.knockout import FIRST, SECOND, TIE, knockout
from qed_lightning.scaffolds.verdicts import parse_choice

__all__ = ["RSA", "merge_groups"]

SOLVE_SYSTEM = """You are writing a proof for a competition mathematics problem.
- Justify every step; a claim without justification counts as a gap.
- If you cannot prove the full statement, present only what you can prove rigorously \
(lemmas, special cases, reductions) and say clearly what remains open.
- Write all mathematics in TeX.
- Give first a short outline naming the key lemmas, then the complete proof, without \
commentary on your process."""

MERGE_SYSTEM = """You are given several candidate proofs of one competition problem. \
Write a single proof that is better than each of them.
- Judge each candidate critically: which steps are correct, which are wrong, which have gaps.
- Build on the correct parts, repair errors and fill gaps; never carry an incorrect \
argument over into your proof.
- If every candidate is wrong, write a new proof from scratch.
- Your proof must stand alone: do not refer to the candidates or to this task.
- Write all mathematics in TeX."""

MERGE_USER = """Problem:
{problem}

{candidates}

Write the improved, self-contained proof."""

SELECT_SYSTEM = """You compare two proofs of one competition problem and decide which is better.
Criteria, in order: correctness (a major error outweighs any number of minor ones), \
completeness, how carefully each step is justified, correct use of known theorems. \
If they are still even, prefer the one whose argument is more explicit.
End your answer with your decision in a box: \\boxed{A}, \\boxed{B}, or \\boxed{equal}."""

SELECT_USER = """Problem:
{problem}

{candidates}

Which proof is better?"""


def label(i: int) -> str:
    return chr(ord("A") + i)


def show(proofs: list[str]) -> str:
    return "\n\n".join(f"=== Proof {label(i)} ===\n{p}\n=== End of proof {label(i)} ===" for i, p in enumerate(proofs))


def merge_groups(population: int, group_size: int, rng) -> list[list[int]]:
    """``population`` groups of ``group_size`` distinct members each, every member in
    exactly ``group_size`` groups: group s is (perm[(s + o) % population] for o in
    offsets), with a random permutation and ``group_size`` distinct random offsets."""
    if not 1 <= group_size <= population:
        raise ValueError(f"group size must be within 1..{population}, got {group_size}")
    perm = list(range(population))
    rng.shuffle(perm)
    offsets = rng.sample(range(population), group_size)
    return [[perm[(s + o) % population] for o in offsets] for s in range(population)]


@register_scaffold
class RSA(Scaffold):
    """Recursive self-aggregation.

    Args:
        population: N, proofs per round.
        group_size: K, candidates per merge call.
        rounds: T, merge rounds.
        select: ``pairwise`` (knockout tournament of the last population) or ``first``
            (the first usable proof of the last round: no selection calls).
        unusable_candidates: See ``Scaffold``.
    """

    name = "rsa"
    reference_calls = "39 (N=8, K=3, T=3)"

    def __init__(self, population: int = 8, group_size: int = 3, rounds: int = 3, select: str = "pairwise",
                 unusable_candidates: str = "drop") -> None:
        super().__init__(unusable_candidates)
        if population < 1 or not 1 <= group_size <= population or rounds < 0:
            raise ValueError(f"RSA needs population >= 1, 1 <= group_size <= population and rounds >= 0; got "
                             f"population={population}, group_size={group_size}, rounds={rounds}")
        if select not in ("pairwise", "first"):
            raise ValueError(f"select must be 'pairwise' or 'first', got {select!r}")
        self.population, self.group_size, self.rounds, self.select = population, group_size, rounds, select

    def max_calls(self) -> int:
        return self.population * (1 + self.rounds) + (self.population - 1 if self.select == "pairwise" else 0)

    def solve(self, ctx: ProblemContext) -> Solve:
        detail = {"dropped": 0, "rounds_without_usable": 0, "ties": 0, "unparsed": 0}
        replies = yield Stage("solve", [Call.of(ctx.statement, system=SOLVE_SYSTEM)] * self.population)
        pool = self._usable(replies, detail)
        for r in range(self.rounds):
            if not pool:
                break
            groups = merge_groups(len(pool), min(self.group_size, len(pool)), ctx.rng(f"round{r}"))
            # every round keeps N members: with fewer usable proofs, members join more groups
            groups = [groups[s % len(groups)] for s in range(self.population)]
            calls = [Call.of(fill(MERGE_USER, problem=ctx.statement,
                                  candidates=show([pool[i].answer for i in g])), system=MERGE_SYSTEM) for g in groups]
            merged = self._usable((yield Stage(f"merge{r}", calls)), detail)
            if merged:
                pool = merged
            else:  # no merge of this round is usable: the previous round's proofs go on
                detail["rounds_without_usable"] += 1
        if not pool:
            return ScaffoldResult(None, "no usable proof in the population", detail)
        if self.select == "first" or len(pool) == 1:
            return ScaffoldResult(pool[0], "first usable proof", detail)

        def compare(a: Reply, b: Reply) -> Call:
            return Call.of(fill(SELECT_USER, problem=ctx.statement, candidates=show([a.answer, b.answer])),
                           system=SELECT_SYSTEM)

        def read(reply: Reply, a: Reply, b: Reply) -> str | None:
            choice = parse_choice(reply.answer, ["A", "B"], shown=[a.answer, b.answer])
            return {"A": FIRST, "B": SECOND, "equal": TIE}.get(choice)

        winner = yield from knockout(ctx, pool, "select", compare, read, detail)
        return ScaffoldResult(winner, "pairwise knockout", detail)

    def _usable(self, replies: list[Reply], detail: dict) -> list[Reply]:
        keep = self.candidates(replies)
        detail["dropped"] += len(replies) - len(keep)
        return [replies[i] for i in keep]
