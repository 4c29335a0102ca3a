"""What a reasoning-cache run produces: per-problem trajectories of (problem, summary)
states with the turns that made them, the run's counters, and a trajectory's final
answer for test-time RC."""
from __future__ import annotations

from dataclasses import dataclass, field

from qed_lightning.contracts import Completion, Problem
from qed_lightning.judging.answer import ExtractedAnswer, extract_answer

__all__ = ["CycleStats", "State", "Trajectory", "TurnOutput", "cycle_stats", "final_answer"]


@dataclass(frozen=True)
class TurnOutput:
    """One generated turn: its text, how many tokens it took, and whether it hit the
    token limit."""

    text: str
    num_tokens: int
    truncated: bool = False
    error: str | None = None  # set when no text came back (a server's counted failure)

    @classmethod
    def from_completion(cls, completion: Completion) -> TurnOutput:
        return cls(completion.text, len(completion.completion_ids), completion.truncated)


@dataclass(frozen=True)
class State:
    """A reasoning prompt's inputs at ``turn``: the problem and the summary so far.

    ``summary`` is ``""`` at turn 0 (no summary yet) and None when the trajectory never
    reached this turn (its prompt would not fit), so the state cannot be served.
    """

    problem: Problem
    turn: int
    summary: str | None


@dataclass
class Trajectory:
    """One problem's cycles. Index ``i`` of ``reasoning`` is the reasoning turn run
    from ``states[i]``; index ``i`` of ``summary_outputs``, ``summaries``,
    ``summary_failed`` and ``summary_cut`` is the summary turn that followed it.

    Attributes:
        states: One per turn, 0..cycles, whether reached or not.
        reasoning: The reasoning turns that ran.
        summary_outputs: The summarizer's raw output per summary turn (None when the
            summarizer raised).
        summaries: The summary in force after each summary turn: the new one, or the
            previous one when the summarizer failed.
        summary_failed: Whether the summarizer failed (raised or gave empty text).
        summary_cut: Whether the new summary was cut to the summary budget.
        skipped_at: The turn whose reasoning prompt exceeded the prompt limit (None
            when every turn fitted); no turn ran from it on.
    """

    problem: Problem
    states: list[State] = field(default_factory=list)
    reasoning: list[TurnOutput] = field(default_factory=list)
    summary_outputs: list[TurnOutput | None] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    summary_failed: list[bool] = field(default_factory=list)
    summary_cut: list[bool] = field(default_factory=list)
    skipped_at: int | None = None

    @property
    def summary(self) -> str:
        """The summary in force now (``""`` before the first summary turn)."""
        return self.summaries[-1] if self.summaries else ""

    @property
    def turn_tokens(self) -> list[int]:
        """Generated tokens per cycle: reasoning plus the summary turn after it."""
        out = []
        for i, turn in enumerate(self.reasoning):
            summary = self.summary_outputs[i] if i < len(self.summary_outputs) else None
            out.append(turn.num_tokens + (summary.num_tokens if summary is not None else 0))
        return out

    @property
    def total_tokens(self) -> int:
        """Every token generated for this problem (prompts not counted)."""
        return sum(self.turn_tokens)


@dataclass(frozen=True)
class CycleStats:
    """Counters of one run, summed over its trajectories. Means are 0.0 over nothing."""

    problems: int
    reasoning_turns: int
    summary_turns: int
    summaries_cut: int
    summarizer_failures: int
    skipped_problems: int
    truncated_reasoning_turns: int
    truncated_summaries: int
    mean_summary_chars: float
    mean_summary_tokens: float

    def metrics(self, prefix: str = "rc/") -> dict[str, float]:
        return {prefix + name: float(value) for name, value in self.__dict__.items()}


def cycle_stats(trajectories: list[Trajectory]) -> CycleStats:
    """The counters of ``trajectories``. Summary lengths cover the accepted summaries:
    characters as kept (after a cut), tokens as generated."""
    chars, tokens = [], []
    for t in trajectories:
        for out, summary, failed in zip(t.summary_outputs, t.summaries, t.summary_failed):
            if not failed:
                chars.append(len(summary))
                tokens.append(out.num_tokens)
    reasoning = [turn for t in trajectories for turn in t.reasoning]
    summaries = [out for t in trajectories for out in t.summary_outputs]
    return CycleStats(
        problems=len(trajectories),
        reasoning_turns=len(reasoning),
        summary_turns=len(summaries),
        summaries_cut=sum(sum(t.summary_cut) for t in trajectories),
        summarizer_failures=sum(sum(t.summary_failed) for t in trajectories),
        skipped_problems=sum(t.skipped_at is not None for t in trajectories),
        truncated_reasoning_turns=sum(turn.truncated for turn in reasoning),
        truncated_summaries=sum(out is not None and out.truncated for out in summaries),
        mean_summary_chars=sum(chars) / len(chars) if chars else 0.0,
        mean_summary_tokens=sum(tokens) / len(tokens) if tokens else 0.0,
    )


def final_answer(trajectory: Trajectory, mode: str = "after_think", strip_self_eval: bool = True) -> ExtractedAnswer:
    """The answer of test-time RC: the last reasoning turn's answer, cut out exactly as
    a single-turn completion's is for the judge (``judging.answer.extract_answer``).

    A trajectory with no reasoning turn (its first prompt did not fit) gives an empty
    answer with ``skip="no_attempt"``.
    """
    if not trajectory.reasoning:
        return ExtractedAnswer("", skip="no_attempt")
    return extract_answer(trajectory.reasoning[-1].text, mode=mode, strip_self_eval=strip_self_eval)
