"""The QED-Nano paper's published headline numbers, as data, so a report can print them
under this project's own results as a labelled reference table (in columns of their own:
they are avg@3 whatever k the report's run used).

Source: the recipe digest (``qed-nano-recipe.md`` section 6). The table comes from the
QED-Nano model card; third-party notes say it matches the paper. Proof benchmarks are
avg@3 (mean grade as a % of 7 over 3 runs, std across runs as the spread); IMO-AnswerBench
is accuracy %. The paper's judge is not known for certain: the released evaluation code
defaults to gemini-3-pro, so the numbers compare with ours only under that judge. The
released ``stats.py`` counts a failed grading as 0 when it averages runs (our
``failed_gradings: zero``). The table has IMO-ProofBench as a whole only: the paper's
PB-Basic / PB-Advanced numbers are not transcribed here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PAPER_JUDGE", "PAPER_K", "PAPER_METRIC", "PAPER_RESULTS", "PAPER_SCAFFOLDS", "PaperResult", "PaperScaffold",
           "paper_results"]

PAPER_JUDGE = "judge: gemini-3-pro per the released code (unverified for the paper)"

PAPER_K = 3  # the paper's runs per problem: its proof numbers are avg@3, whatever k a report's own run used
PAPER_METRIC = {"imo_proofbench": f"avg@{PAPER_K}", "proofbench": f"avg@{PAPER_K}", "answerbench": "accuracy %"}

_CARD = "model card (matches the paper per third parties)"
_CARD_ONLY = "model card"
_THIRD = "paper, via third-party notes (unverified; its 76.5 presumably IMO-AnswerBench)"


@dataclass(frozen=True)
class PaperResult:
    """One published number.

    Attributes:
        model: The model (or model + scaffold) as the paper names it.
        benchmark: ``imo_proofbench``, ``proofbench`` or ``answerbench``.
        value: avg@3 % on proof benchmarks, accuracy % on ``answerbench``.
        spread: Std across the 3 runs, where published; None otherwise.
        provenance: Where the number comes from and how far it is trusted.
        judge: Which judge graded it, as far as is known.
    """

    model: str
    benchmark: str
    value: float
    spread: float | None
    provenance: str
    judge: str = PAPER_JUDGE


def _row(model: str, provenance: str, imo=None, pb=None, answer=None):
    """One table row -> its published cells (a None cell was not published)."""
    cells = (("imo_proofbench", imo), ("proofbench", pb), ("answerbench", answer))
    out = []
    for bench, cell in cells:
        if cell is None:
            continue
        value, spread = cell if isinstance(cell, tuple) else (cell, None)
        out.append(PaperResult(model, bench, value, spread, provenance))
    return out


PAPER_RESULTS: tuple[PaperResult, ...] = tuple(
    r
    for row in (
        _row("Qwen3-4B-Thinking-2507", _CARD, (20.4, 2.6), (19.5, 0.9), 55.8),
        _row("QED-Nano-SFT", _CARD, (39.5, 2.9), (33.3, 0.5), 57.5),
        _row("QED-Nano", _CARD, (40.0, 0.6), (44.9, 3.4), 67.5),
        _row("QED-Nano (Agent)", _CARD_ONLY, (54.0, 3.7), (54.4, 2.4)),
        _row("QED-Nano + RSA scaffold", _THIRD, 56.9, 62.6, 76.5),
        _row("Qwen3-30B-A3B-Thinking-2507", _CARD, (27.6, 1.0), (26.1, 2.4), 67.0),
        _row("Qwen3-235B-A22B-Thinking-2507", _CARD, (34.1, 0.7), (33.7, 1.1), 70.5),
        _row("Nomos-1", _CARD, (40.3, 3.5), (28.3, 3.9), 49.0),
        _row("GPT-OSS-20B", _CARD, (38.3, 1.2), (38.4, 3.9), 61.5),
        _row("GPT-OSS-120B", _CARD, (43.1, 3.2), (47.5, 1.7), 70.5),
        _row("DeepSeek-Math-V2", _CARD, (57.9, 2.0), (60.6, 0.1), 75.8),
        _row("Gemini 3 Pro", _CARD, (58.7, 2.9), (66.7, 3.1), 83.2),
    )
    for r in row
)


def paper_results(benchmarks: Iterable[str] | None = None) -> tuple[PaperResult, ...]:
    """The published numbers, in the paper's row order, for ``benchmarks`` (all if None)."""
    wanted = None if benchmarks is None else set(benchmarks)
    return tuple(r for r in PAPER_RESULTS if wanted is None or r.benchmark in wanted)


@dataclass(frozen=True)
class PaperScaffold:
    """One row of the paper's test-time compute comparison (its Table 2) for QED-Nano on
    IMO-ProofBench.

    Attributes:
        mode: This project's mode that runs the same scaffold (``single``, ``rc``...).
        score: avg grade as a % of 7.
        tokens: Generated tokens per problem (reasoning included, prompts excluded, as
            the released evaluation's cost counter sums them; inferred, unverified).
        calls: Model calls per problem at the released settings (from its code).
    """

    mode: str
    name: str
    score: float
    tokens: int
    calls: str
    provenance: str = "paper Table 2 via third-party notes (unverified)"


PAPER_SCAFFOLDS: tuple[PaperScaffold, ...] = (
    PaperScaffold("single", "single turn", 40.0, 93_690, "1"),
    PaperScaffold("rc", "reasoning cache", 44.0, 237_379, "5"),
    PaperScaffold("dsm", "DeepSeekMath-style agent", 54.0, 1_605_879, "<= 60"),
    PaperScaffold("rsa", "recursive self-aggregation", 56.9, 2_045_764, "39"),
)
