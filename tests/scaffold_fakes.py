"""A scripted model for scaffold tests: replies chosen by a rule, every call recorded."""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from qed_lightning.contracts import Problem
from qed_lightning.scaffolds.base import Call, ProblemContext, Reply


def ctx(pid: str = "p1", sample: int = 0, seed: int = 0, statement: str | None = None) -> ProblemContext:
    problem = Problem(pid, f"Prove statement {pid}.", rubric="rubric", reference_solution="ref")
    return ProblemContext(problem, statement or f"Generate a rigorous proof to the following question: {problem.statement}",
                          sample, seed, answer_mode="whole")


def system_of(call: Call) -> str:
    return call.messages[0]["content"] if call.messages[0]["role"] == "system" else ""


def user_of(call: Call) -> str:
    return call.messages[-1]["content"]


class ScriptedChat:
    """A ``ChatGenerate``: ``rule(call, seed) -> text or Reply``; the default writes a
    proof named by the hash of (conversation, seed), so different seeds differ and a
    rerun is identical. ``batches`` records the size of each generate call, ``calls``
    every (call, seed)."""

    def __init__(self, rule: Callable[[Call, int], "str | Reply"] | None = None, tokens: int = 10) -> None:
        self.rule, self.tokens = rule, tokens
        self.batches: list[int] = []
        self.calls: list[tuple[Call, int]] = []

    def __call__(self, calls: Sequence[tuple[Call, int]]) -> list[Reply]:
        self.batches.append(len(calls))
        out = []
        for call, seed in calls:
            self.calls.append((call, seed))
            made = self.rule(call, seed) if self.rule is not None else None
            if made is None:
                made = "proof " + hashlib.sha256(f"{call.digest()}|{seed}".encode()).hexdigest()[:8]
            out.append(made if isinstance(made, Reply) else Reply(made, made, self.tokens, 5))
        return out
