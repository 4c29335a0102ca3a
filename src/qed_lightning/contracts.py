"""The typed contracts every stage shares: problems, completions, verdicts, and the
protocols of a rollout engine and a judge. One definition each, here; later stages
fill them in (engines in ``engines/``, judges in ``judging/``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

__all__ = [
    "Problem",
    "Completion",
    "SamplingSettings",
    "GradingItem",
    "Verdict",
    "Judge",
    "RolloutEngine",
]


@dataclass(frozen=True)
class Problem:
    """One proof problem.

    Args:
        id: Stable identifier (benchmark id, dataset row key).
        statement: The problem as shown to the policy.
        rubric: Marking scheme the judge grades against (None when there is none).
        reference_solution: Official solution, for judges that use one.
        metadata: Anything else the source carried (category, level, source...).
    """

    id: str
    statement: str
    rubric: str | None = None
    reference_solution: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Problem.id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.statement, str) or not self.statement.strip():
            raise ValueError(f"Problem {self.id!r}: statement must be a non-empty string")


@dataclass(frozen=True)
class SamplingSettings:
    """Every sampling field, set explicitly: engines never inherit a model's
    generation config, so trainer and engine agree on the distribution."""

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 1024
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1 or self.n < 1:
            raise ValueError(f"max_tokens and n must be >= 1, got {self.max_tokens}, {self.n}")


@dataclass
class Completion:
    """One sampled completion, in tokens first and text second.

    ``logprobs`` are the per-token log-probabilities of the *sampling* distribution
    (after temperature and truncation), one per completion token; ``weight_version``
    is the optimizer step whose weights produced it, so on-policy can be checked.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS / stop string) or "length" (hit max_tokens)
    text: str
    weight_version: int

    def __post_init__(self) -> None:
        if len(self.logprobs) != len(self.completion_ids):
            raise ValueError(
                f"Completion has {len(self.completion_ids)} tokens but {len(self.logprobs)} log-probs"
            )

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class GradingItem:
    """What a judge needs to grade one proof."""

    problem: Problem
    proof: str


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for one item. ``score`` is 0..7 when the judge answered;
    when it failed after retries ``error`` says why (``"<kind>: <detail>"``) and
    ``score`` is None, so a failure is never mistaken for a real zero.

    ``origin`` says where the verdict came from: ``"judge"`` (a grader call),
    ``"cache"`` (an earlier identical call), ``"no_answer"`` (truncated or empty
    answer, scored 0 without a call). ``latency_s`` and ``attempts`` describe the
    grader call (0 when there was none).
    """

    score: int | None
    raw: str = ""
    error: str | None = None
    origin: str = "judge"
    latency_s: float = 0.0
    attempts: int = 0

    def __post_init__(self) -> None:
        if self.score is not None and not 0 <= self.score <= 7:
            raise ValueError(f"Verdict score must be within 0..7, got {self.score}")
        if self.score is None and self.error is None:
            raise ValueError("A Verdict without a score must carry an error")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_kind(self) -> str | None:
        """The part of ``error`` before the first colon (``"timeout"``, ``"no_verdict"``...)."""
        return None if self.error is None else self.error.split(":", 1)[0].strip()

    @property
    def reward(self) -> float:
        """score / 7; a failed verdict counts as 0 (callers may also mask it out)."""
        return 0.0 if self.score is None else self.score / 7.0


@runtime_checkable
class Judge(Protocol):
    """Grades proofs; batched, and free to run concurrently inside."""

    def grade(self, items: Sequence[GradingItem]) -> list[Verdict]: ...


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples completions for token prompts and receives the trainer's weights."""

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings
    ) -> list[list[Completion]]:
        """One inner list of ``sampling.n`` completions per prompt, in prompt order."""
        ...

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace all weights (full state dict, tied ones included) and stamp ``version``."""
        ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...
