"""What a test-time scaffold is: a per-problem program that asks for stages of calls.

A scaffold's :meth:`Scaffold.solve` is a generator written for one problem, as plain
sequential code: it ``yield``s a :class:`Stage` (the calls it needs next, which do not
depend on each other) and receives their :class:`Reply` list back; it ``return``s the
chosen proof. The driver (``scaffolds/driver.py``) runs every problem of a chunk in
lockstep, so each stage of all problems is one batched generation, and replays finished
stages from the call store on resume. Every stochastic choice comes from
:meth:`ProblemContext.rng`, seeded by (run seed, problem, sample, stage), so a replay
takes the same branches.

Adding a scaffold is a new file: a :class:`Scaffold` subclass decorated with
:func:`register_scaffold`.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generator, Sequence

from qed_lightning.contracts import GradingItem, Problem, Verdict
from qed_lightning.judging.answer import extract_answer
from qed_lightning.placeholders import fill

__all__ = ["Call", "JudgeStage", "ProblemContext", "Reply", "SCAFFOLDS", "Scaffold", "ScaffoldResult", "Stage",
           "register_scaffold", "UNUSABLE_CANDIDATES"]

Message = dict[str, str]
SCAFFOLDS: dict[str, type[Scaffold]] = {}
# What happens to a candidate proof that was cut by the token limit, skipped (prompt too
# long) or failed: ``drop`` leaves it out of every later stage (counted); ``keep`` passes
# its answer text on as it is (the released code's behaviour: often an empty proof).
UNUSABLE_CANDIDATES = ("drop", "keep")


def register_scaffold(cls: type[Scaffold]) -> type[Scaffold]:
    if cls.name in SCAFFOLDS:
        raise ValueError(f"scaffold {cls.name!r} is registered twice")
    SCAFFOLDS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Call:
    """One request to the model: a conversation ending in a user turn."""

    messages: tuple[Message, ...]

    @staticmethod
    def of(user: str, system: str | None = None, history: Sequence[Message] = ()) -> Call:
        head = ({"role": "system", "content": system},) if system else ()
        return Call(head + tuple(history) + ({"role": "user", "content": user},))

    def digest(self) -> str:
        blob = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in self.messages)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reply:
    """What came back for a call.

    Attributes:
        text: The whole generated text (reasoning included when the model thinks).
        answer: What a later stage sees: the text after the last ``</think>`` (or the
            whole text for models that do not think); ``""`` when there is none.
        tokens: Generated tokens (reasoning included).
        prompt_tokens: Tokens of the rendered conversation (0 when unknown).
        truncated: The token limit cut it.
        error: ``"<kind>: <detail>"`` when no text came back: ``too_long`` (the
            prompt did not fit, so no call was made) or the engine's/server's failure.
    """

    text: str
    answer: str
    tokens: int = 0
    prompt_tokens: int = 0
    truncated: bool = False
    error: str | None = None

    @property
    def usable(self) -> bool:
        """A complete answer: not failed, not skipped, not cut, not empty."""
        return self.error is None and not self.truncated and bool(self.answer.strip())

    @property
    def skipped(self) -> bool:
        return self.error is not None and self.error.startswith("too_long")

    def to_dict(self) -> dict[str, Any]:
        return dict(text=self.text, answer=self.answer, tokens=self.tokens, prompt_tokens=self.prompt_tokens,
                    truncated=self.truncated, error=self.error)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Reply:
        return cls(row["text"], row["answer"], int(row["tokens"]), int(row["prompt_tokens"]), bool(row["truncated"]),
                   row.get("error"))


@dataclass(frozen=True)
class Stage:
    """Calls that can run at once; ``name`` is unique within one problem's run."""

    name: str
    calls: tuple[Call, ...]

    def __init__(self, name: str, calls: Sequence[Call]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "calls", tuple(calls))


@dataclass(frozen=True)
class JudgeStage:
    """Proofs for the scaffold's own judge (best-of-n): the reply is one ``Verdict`` each."""

    name: str
    items: tuple[GradingItem, ...]

    def __init__(self, name: str, items: Sequence[GradingItem]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "items", tuple(items))


@dataclass(frozen=True)
class ScaffoldResult:
    """A scaffold's answer for one (problem, sample).

    Attributes:
        reply: The chosen call's reply (its ``text`` is graded like a single-turn
            sample's); None when the scaffold has no usable proof to give.
        reason: Why there is no proof (``reply`` is None), or how it was chosen.
        detail: Scaffold-specific facts worth keeping (scores, winners, rounds run).
    """

    reply: Reply | None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProblemContext:
    """What a scaffold knows about the problem it solves.

    Attributes:
        problem: The benchmark problem (rubric and reference included: a scaffold must
            not show them to the model; best-of-n's judge may use the rubric).
        statement: The problem as the benchmark's prompt frames it (what the model is
            asked), e.g. "Generate a rigorous proof ..." + the problem.
        sample: The sample index (avg@k's run).
        seed: The run seed.
    """

    problem: Problem
    statement: str
    sample: int
    seed: int
    answer_mode: str = "after_think"

    def rng(self, stage: str) -> random.Random:
        """A generator seeded by (run seed, problem, sample, stage): the same choices
        on every rerun, and different ones for different problems and samples."""
        key = f"{self.seed}|{self.problem.id}|{self.sample}|{stage}"
        return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


Solve = Generator["Stage | JudgeStage", "list[Reply] | list[Verdict]", ScaffoldResult]


class Scaffold:
    """Base of every scaffold.

    Args:
        unusable_candidates: ``drop`` (default) or ``keep``: what a later stage does
            with a candidate that was cut by the token limit, skipped or failed
            (``UNUSABLE_CANDIDATES``). Either way it is counted.
    """

    name: ClassVar[str] = ""
    reference_calls: ClassVar[str] = ""  # calls per problem at the reference settings, for docs and the report

    def __init__(self, unusable_candidates: str = "drop") -> None:
        if unusable_candidates not in UNUSABLE_CANDIDATES:
            raise ValueError(f"unusable_candidates must be one of {UNUSABLE_CANDIDATES}, got {unusable_candidates!r}")
        self.unusable_candidates = unusable_candidates

    def solve(self, ctx: ProblemContext) -> Solve:
        raise NotImplementedError

    def max_calls(self) -> int | None:
        """The most calls one problem can take at these settings (None: unbounded)."""
        return None

    def candidates(self, replies: Sequence[Reply]) -> list[int]:
        """Indices of the replies a later stage may use, per ``unusable_candidates``."""
        if self.unusable_candidates == "keep":
            return list(range(len(replies)))
        return [i for i, r in enumerate(replies) if r.usable]

    def judge(self):
        """The scaffold's own judge for ``JudgeStage``s (None: it uses none)."""
        return None


def answer_of(text: str, answer_mode: str) -> str:
    """The part of a generation a later stage sees (``Reply.answer``): after the last
    ``</think>``, self-evaluation kept (a scaffold may read it)."""
    return extract_answer(text, mode=answer_mode, strip_self_eval=False).text
