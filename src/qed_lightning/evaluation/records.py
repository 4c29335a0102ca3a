"""What an evaluation produces: one ``EvalRecord`` per (problem, sample), saved as a
JSONL line as soon as it is graded, so a resumed run redoes nothing finished and the
report and metrics are computed from the same lines."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["EvalRecord", "MAX_SCORE"]

MAX_SCORE = 7


@dataclass
class EvalRecord:
    """One graded sample.

    Attributes:
        benchmark: Benchmark name (``imo_proofbench``, ``proofbench``, ``answerbench``...).
        model: The evaluated model's label (the report's row).
        problem_id: The problem's id in its benchmark.
        sample: Sample index ``0..k-1`` (avg@k's run index).
        text: The whole generated text (all RC turns' last one in RC mode).
        answer: What was graded (post-``</think>``, self-evaluation removed; the
            extracted final answer on AnswerBench).
        tokens: Generated tokens for this sample (every turn in RC mode).
        finish_reason: ``stop`` or ``length`` (of the last turn).
        score: 0..7; on AnswerBench 7 for a correct answer and 0 otherwise. None when
            grading failed (``error`` says why): never counted as a 0 silently.
        error: ``"<kind>: <detail>"`` when grading failed.
        category, level: The problem's, for the per-category/level breakdowns.
        judge: The judge's label (model and prompt): scores of different judges do not compare.
        origin: How the score came about (``judge``, ``no_answer``, ``checker``, ``cache``...).
        calls: Model calls that made this sample (1 single-turn; RC's turns; a
            scaffold's calls).
    """

    benchmark: str
    model: str
    problem_id: str
    sample: int
    text: str
    answer: str
    tokens: int
    finish_reason: str
    score: int | None
    error: str | None = None
    category: str | None = None
    level: str | None = None
    judge: str = ""
    origin: str = "judge"
    calls: int = 1

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.benchmark, self.problem_id, self.sample)

    @property
    def graded(self) -> bool:
        return self.score is not None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
