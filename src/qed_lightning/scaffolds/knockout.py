"""A pairwise knockout tournament, the final selection of RSA and Nomos.

Each round shuffles the pool with a generator seeded by (run seed, problem, sample,
round), so which proof is shown first is random yet reproducible, pairs neighbours,
asks the model for each pair's winner in one stage, and lets an odd one out through;
8 proofs take 4 + 2 + 1 = 7 calls. A tie or an unreadable verdict is settled by a coin
from the same generator and counted in ``detail`` (``ties``, ``unparsed``).
"""
from __future__ import annotations

from typing import Callable, Generator, TypeVar

from qed_lightning.scaffolds.base import Call, ProblemContext, Reply, Stage

__all__ = ["FIRST", "SECOND", "TIE", "knockout"]

T = TypeVar("T")
FIRST, SECOND, TIE = "first", "second", "tie"


def knockout(ctx: ProblemContext, pool: list[T], stage: str, compare: Callable[[T, T], Call],
             read: Callable[[Reply, T, T], str | None], detail: dict) -> Generator[Stage, list[Reply], T]:
    """The winner of ``pool`` (``yield from`` it inside a scaffold's ``solve``).

    Args:
        stage: Prefix of the rounds' stage names (``<stage>0``, ``<stage>1``...).
        compare: The call that asks which of two candidates is better.
        read: ``FIRST``, ``SECOND``, ``TIE`` or None (unreadable) from a successful reply.
        detail: Gets its ``ties`` and ``unparsed`` counts increased.
    """
    pool = list(pool)
    level = 0
    while len(pool) > 1:
        rng = ctx.rng(f"{stage}{level}")
        rng.shuffle(pool)
        pairs = [(pool[i], pool[i + 1]) for i in range(0, len(pool) - 1, 2)]
        replies = yield Stage(f"{stage}{level}", [compare(a, b) for a, b in pairs])
        winners = []
        for (a, b), reply in zip(pairs, replies):
            verdict = read(reply, a, b) if reply.error is None else None
            if verdict not in (FIRST, SECOND):
                key = "ties" if verdict == TIE else "unparsed"
                detail[key] = detail.get(key, 0) + 1
                verdict = rng.choice([FIRST, SECOND])
            winners.append(a if verdict == FIRST else b)
        if len(pool) % 2:
            winners.append(pool[-1])
        pool, level = winners, level + 1
    return pool[0]
