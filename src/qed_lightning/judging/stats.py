"""Counters a judge keeps per batch, turned into logged metrics."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from qed_lightning.contracts import Verdict

__all__ = ["JudgeStats"]

# Errors that are the grader's own answer (it replied, but not usably), as opposed to
# the infrastructure failing to get a reply at all.
GRADER_ANSWER_ERRORS = ("no_verdict", "out_of_scale", "rule_error")


@dataclass
class JudgeStats:
    items: int = 0
    calls: int = 0  # items sent to the grader
    cache_hits: int = 0
    no_answer: int = 0  # truncated or empty: 0 without a call
    failures: Counter = field(default_factory=Counter)  # error kind -> count
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    scores: Counter = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        self.items += 1
        if verdict.origin == "cache":
            self.cache_hits += 1
        elif verdict.origin == "no_answer":
            self.no_answer += 1
        else:
            self.calls += 1
            self.retries += max(0, verdict.attempts - 1)
            self.latencies.append(verdict.latency_s)
        if verdict.ok:
            self.scores[verdict.score] += 1
        else:
            self.failures[verdict.error_kind] += 1

    @property
    def infrastructure_failures(self) -> int:
        return sum(n for kind, n in self.failures.items() if kind not in GRADER_ANSWER_ERRORS)

    def metrics(self, prefix: str = "judge/") -> dict[str, float]:
        n = max(self.items, 1)
        out = {
            "items": float(self.items),
            "failure_rate": sum(self.failures.values()) / n,
            "no_verdict_rate": self.failures["no_verdict"] / n,
            "cache_hit_rate": self.cache_hits / n,
            "no_answer_rate": self.no_answer / n,
            "retries": float(self.retries),
        }
        if self.latencies:
            lat = torch.tensor(self.latencies, dtype=torch.float64)
            out["latency_p50"] = float(torch.quantile(lat, 0.5))
            out["latency_p95"] = float(torch.quantile(lat, 0.95))
        for score in range(8):
            out[f"score_hist/{score}"] = float(self.scores[score])
        for kind, count in sorted(self.failures.items()):
            out[f"errors/{kind}"] = float(count)
        return {prefix + k: v for k, v in out.items()}
