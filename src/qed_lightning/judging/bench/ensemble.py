"""A judge made of judges: each proof graded k times by each member, the scores combined.

For RL (``model.judge``) and for ``qed judge bench`` alike, so the bench measures the
same verdicts RL would train on. Combining rules (:data:`COMBINERS`) work on the
successful member gradings of one proof and return a point on the IMO 0-7 scale:

* ``mean``: the arithmetic mean, rounded to the nearest point, halves up;
* ``median``: the median (the mean of the two middle scores for an even count),
  rounded the same way;
* ``majority``: the most frequent score; a tie goes to the LOWEST of the tied scores
  (a split vote never makes the grade more lenient).

Failures are counted per member (``member_stats``, logged as ``judge/member<i>/...``).
A proof with fewer than ``min_ok`` successful gradings gets no verdict: its error
carries the most frequent member error kind (so a grader that is down still stops the
run through ``max_failed_batches``) and the member errors.

Sampling k times one grader relies on sampling: members need a temperature above 0
and must not use a verdict cache (it would answer all k from one entry); the
in-process client seeds request i of a batch with ``seed + i``, and the k copies are
sent in one batch, so they differ. A cached member is refused for k > 1.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Callable, Sequence

from qed_lightning.contracts import GradingItem, Problem, Verdict
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.bench.metrics import round_half_up
from qed_lightning.judging.stats import JudgeStats

__all__ = ["COMBINERS", "JudgeEnsemble", "combine_scores"]


def _majority(scores: Sequence[int]) -> int:
    counts = Counter(scores)
    top = max(counts.values())
    return min(s for s, c in counts.items() if c == top)


COMBINERS: dict[str, Callable[[Sequence[int]], int]] = {
    "mean": lambda scores: round_half_up(sum(scores) / len(scores)),
    "median": lambda scores: round_half_up(statistics.median(scores)),
    "majority": _majority,
}


def combine_scores(scores: Sequence[int], how: str) -> int:
    """One score on 0..7 from several (non-empty) gradings of one proof."""
    if not scores:
        raise ValueError("nothing to combine")
    return COMBINERS[how](scores)


class JudgeEnsemble(BaseJudge):
    """Grades each proof ``samples`` times with each member and combines the scores.

    Args:
        members: The judges (``LLMJudge``, ``RuleJudge``, ...), each with its own
            template, client and settings; they grade one after another.
        samples: Gradings per member per proof (k); the k copies go to the member in
            one batch.
        combine: ``mean``, ``median`` or ``majority`` (:data:`COMBINERS`).
        min_ok: Successful gradings a proof needs for a verdict (at least 1).
        on_failure, max_failed_batches: see :class:`~qed_lightning.judging.base.BaseJudge`
            (each member keeps its own ``max_failed_batches`` too: set it to 0 there to
            let a member fail while others answer).
    """

    def __init__(
        self,
        members: list[BaseJudge],
        samples: int = 1,
        combine: str = "mean",
        min_ok: int = 1,
        on_failure: str = "zero",
        max_failed_batches: int = 3,
    ) -> None:
        super().__init__(on_failure=on_failure, max_failed_batches=max_failed_batches)
        if not members:
            raise ValueError("JudgeEnsemble needs at least one member")
        if combine not in COMBINERS:
            raise ValueError(f"combine must be one of {sorted(COMBINERS)}, got {combine!r}")
        if samples < 1 or not 1 <= min_ok <= samples * len(members):
            raise ValueError(f"JudgeEnsemble needs samples >= 1 and 1 <= min_ok <= samples x members "
                             f"({samples * len(members)}), got samples={samples}, min_ok={min_ok}")
        cached = [i for i, m in enumerate(members) if getattr(m, "cache", None) is not None]
        if samples > 1 and cached:
            raise ValueError(f"JudgeEnsemble samples={samples} needs members without a verdict cache (members "
                             f"{cached} have one; set their cache_dir: null): a cache answers all k from one entry")
        self.members, self.samples, self.combine, self.min_ok = list(members), samples, combine, min_ok
        self.member_stats = [JudgeStats() for _ in self.members]  # last batch, per member
        self.last_member_verdicts: list[tuple[BaseJudge, list[Verdict]]] = []

    def check_problems(self, problems: Sequence[Problem]) -> None:
        for member in self.members:
            member.check_problems(problems)

    def cache_reference(self) -> dict | None:
        refs = {str(i): m.cache_reference() for i, m in enumerate(self.members) if hasattr(m, "cache_reference")}
        refs = {k: v for k, v in refs.items() if v is not None}
        return refs or None

    def grade(self, items: Sequence[GradingItem]) -> list[Verdict]:
        """One combined verdict per item, in order (see the module docstring)."""
        items = list(items)
        self.check_problems([item.problem for item in items])
        per_item: list[list[Verdict]] = [[] for _ in items]
        self.last_member_verdicts = []
        for m, member in enumerate(self.members):
            verdicts = member.grade(items * self.samples) if items else []
            self.last_member_verdicts.append((member, verdicts))
            stats = JudgeStats()
            for j, verdict in enumerate(verdicts):
                stats.add(verdict)
                per_item[j % len(items)].append(verdict)
            self.member_stats[m] = stats
        out = [self._combined(vs) for vs in per_item]
        stats = JudgeStats()
        for verdict in out:
            stats.add(verdict)
            self.total_stats.add(verdict)
        self.last_stats = stats
        self._check_alive(stats, out)
        return out

    def _combined(self, verdicts: list[Verdict]) -> Verdict:
        ok = [v.score for v in verdicts if v.ok]
        origins = {v.origin for v in verdicts}
        origin = origins.pop() if len(origins) == 1 else "judge"  # all cached / all unanswered, else a call
        timing = dict(latency_s=sum(v.latency_s for v in verdicts), attempts=sum(v.attempts for v in verdicts))
        raw = json.dumps({"scores": [v.score for v in verdicts], "errors": [v.error_kind for v in verdicts]})
        if len(ok) >= self.min_ok:
            return Verdict(combine_scores(ok, self.combine), raw=raw, origin=origin, **timing)
        kinds = Counter(v.error_kind for v in verdicts if not v.ok)
        kind = max(kinds, key=lambda k: (kinds[k], k))
        return Verdict(None, raw=raw, origin=origin, **timing,
                       error=f"{kind}: ensemble got {len(ok)} of {len(verdicts)} gradings, needs {self.min_ok} "
                             f"(member errors: {dict(kinds)})")

    def metrics(self) -> dict[str, float]:
        """The last batch's combined metrics plus each member's, ``judge/member<i>/...``."""
        out = self.last_stats.metrics()
        for i, stats in enumerate(self.member_stats):
            out.update(stats.metrics(prefix=f"judge/member{i}/"))
        return out
