"""A judge that is a Python function: for tests, for the RL learning check, and for
tasks whose answers can be checked programmatically.

The rule is named by import path (``package.module:function``) so a config can
choose it; it is called as ``rule(problem, answer) -> int`` and must return a score
on ``scale``. An exception or an off-scale return is a counted error, not a crash.
"""
from __future__ import annotations

import importlib
import time
from typing import Callable, Sequence

from qed_lightning.contracts import Problem, Verdict
from qed_lightning.judging.base import BaseJudge

__all__ = ["RuleJudge", "import_rule"]

Rule = Callable[[Problem, str], int]


def import_rule(path: str) -> Rule:
    """``"pkg.mod:func"`` or ``"pkg.mod.func"`` -> the callable."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"rule must be an import path like 'package.module:function', got {path!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import judge rule {path!r}: {err}") from None
    if not callable(fn):
        raise ValueError(f"judge rule {path!r} is not callable")
    return fn


class RuleJudge(BaseJudge):
    """Scores with ``rule(problem, answer)``.

    Args:
        rule: Import path of the scoring function.
        scale: Allowed scores (default 0..7).
        answer_mode, strip_self_evaluation, on_failure, max_failed_batches: see
            :class:`~qed_lightning.judging.base.BaseJudge`.
    """

    def __init__(
        self,
        rule: str,
        scale: Sequence[int] = tuple(range(8)),
        answer_mode: str = "after_think",
        strip_self_evaluation: bool = True,
        on_failure: str = "zero",
        max_failed_batches: int = 3,
    ) -> None:
        super().__init__(answer_mode, strip_self_evaluation, on_failure, max_failed_batches)
        self.rule_path, self.rule, self.scale = rule, import_rule(rule), tuple(scale)

    def _grade_answers(self, problems: Sequence[Problem], answers: Sequence[str]) -> list[Verdict]:
        return [self._grade_one(p, a) for p, a in zip(problems, answers)]

    def _grade_one(self, problem: Problem, answer: str) -> Verdict:
        start = time.perf_counter()
        try:
            score = self.rule(problem, answer)
        except Exception as err:  # the rule is user code: its failure is a counted error
            return Verdict(None, error=f"rule_error: {type(err).__name__}: {err}", attempts=1,
                           latency_s=time.perf_counter() - start)
        took = time.perf_counter() - start
        if isinstance(score, bool) or not isinstance(score, int) or score not in self.scale:
            return Verdict(None, raw=repr(score), error=f"out_of_scale: rule returned {score!r}, allowed {list(self.scale)}",
                           attempts=1, latency_s=took)
        return Verdict(score, raw=str(score), attempts=1, latency_s=took)
