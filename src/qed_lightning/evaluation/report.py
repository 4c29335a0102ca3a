"""The evaluation report: ``report.md`` (a table in the paper's shape, the paper's own rows
as labelled references, per-benchmark detail), ``records.jsonl`` (every generation and
verdict) and PNG plots.

Summary contract. ``summarize(records, k) -> dict`` is called once per (model, benchmark);
the real one is ``qed_lightning.evaluation.metrics.summarize_records``. Keys:

    avg          avg@k: mean grade as a % of 7 over the k runs (graded samples only)
    spread       std across the k runs' %, None with one run
    runs         [per-run %] (run i = the records with ``sample == i``)
    pass_at_1    %, pass_at_k: % (a "pass" as metrics defines it)
    accuracy     % correct, for answer benchmarks (None elsewhere)
    tokens_mean  mean generated tokens per sample
    failure_rate fraction 0..1 of samples whose grading failed
    graded       samples with a score; total: all samples
    by_category  {category: avg %}; by_level: {level: avg %}

A missing key or a None prints as "–". The report does not read ``failure_rate``,
``graded`` or ``total``: it counts failed gradings (``score is None``) from the records
themselves, so its counts match records.jsonl, and shows them in every row, never folded
into zeros.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qed_lightning.evaluation.paper_results import PAPER_METRIC, paper_results
from qed_lightning.evaluation.records import MAX_SCORE, EvalRecord

__all__ = ["ReportPaths", "Summarize", "write_report"]

Summarize = Callable[[list[EvalRecord], int], dict[str, Any]]
NO_PLOTS = "Plots skipped: matplotlib is not installed (it comes with the `dev` extra)."
DASH = "–"


@dataclass(frozen=True)
class ReportPaths:
    """What ``write_report`` wrote."""

    markdown: Path
    plots: list[Path]
    jsonl: Path


def write_report(
    records: Iterable[EvalRecord],
    out_dir: str | Path,
    k: int,
    summarize: Summarize | None = None,
    benchmark_kinds: dict[str, str] | None = None,
) -> ReportPaths:
    """Write ``report.md``, ``records.jsonl`` and the plots under ``out_dir``.

    Args:
        records: Graded samples, any number of models and benchmarks.
        out_dir: Created if missing.
        k: Runs per problem (avg@k, pass@k).
        summarize: ``summarize(records, k) -> dict`` (module docstring); defaults to
            ``metrics.summarize_records``.
        benchmark_kinds: ``{benchmark: "proof" | "answer"}``; a benchmark not listed is
            an answer benchmark if its name contains "answer", else a proof benchmark.
    """
    if summarize is None:
        from qed_lightning.evaluation.metrics import summarize_records as summarize
    records = list(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.model, r.benchmark), []).append(r)
    models = list(dict.fromkeys(m for m, _ in groups))
    benches = list(dict.fromkeys(b for _, b in groups))
    given = benchmark_kinds or {}
    kinds = {b: given.get(b) or ("answer" if "answer" in b else "proof") for b in benches}
    summaries = {key: summarize(recs, k) for key, recs in groups.items()}

    jsonl = out / "records.jsonl"
    jsonl.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    plots = _write_plots(groups, out)
    lines = _headline(models, benches, kinds, groups, summaries, k)
    for bench in benches:
        lines += _detail(bench, kinds[bench], models, groups, summaries, k)
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] if plots is not None else [NO_PLOTS]
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ReportPaths(markdown, plots or [], jsonl)


def _pct(x: Any) -> str:
    return DASH if x is None else f"{float(x):.1f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _failed(recs: list[EvalRecord]) -> int:
    return sum(not r.graded for r in recs)


def _judges(recs: list[EvalRecord]) -> str:
    return " + ".join(dict.fromkeys(r.judge or "unnamed judge" for r in recs))


def _score(summary: dict, kind: str) -> str:
    """The headline cell: accuracy for answer benchmarks, avg@k (spread) for proofs."""
    if kind == "answer":
        return _pct(summary.get("accuracy", summary.get("avg")))
    spread = summary.get("spread")
    return _pct(summary.get("avg")) + ("" if spread is None else f" ({float(spread):.1f})")


def _published(r) -> str:
    return _pct(r.value) + ("" if r.spread is None else f" ({r.spread:.1f})")


def _headline(models, benches, kinds, groups, summaries, k) -> list[str]:
    header = ["Model", "Source", "Judge"]
    header += [f"{b} " + ("accuracy %" if kinds[b] == "answer" else f"avg@{k} (std)") for b in benches]
    rows = []
    for m in models:
        present = [b for b in benches if (m, b) in groups]
        judges = {b: _judges(groups[m, b]) for b in present}
        judge = "; ".join(f"{b}: {j}" for b, j in judges.items())
        if len(set(judges.values())) == 1:
            judge = judges[present[0]]
        cells = []
        for b in benches:
            if (m, b) not in groups:
                cells.append(DASH)
                continue
            failed = _failed(groups[m, b])
            cells.append(_score(summaries[m, b], kinds[b]) + (f"; {failed} ungraded" if failed else ""))
        rows.append([m, f"this evaluation (k={k})", judge] + cells)
    published = paper_results(benches)
    by_model: dict[str, dict[str, Any]] = {}
    for r in published:
        by_model.setdefault(r.model, {})[r.benchmark] = r
    for model, cells in by_model.items():
        first = next(iter(cells.values()))
        provenance = "; ".join(dict.fromkeys(r.provenance for r in cells.values()))
        values = [_published(cells[b]) if b in cells else DASH for b in benches]
        rows.append([f"paper: {model}", provenance, first.judge] + values)
    notes = [
        f"Proof benchmarks: avg@{k} = mean grade as a % of {MAX_SCORE} over {k} runs "
        "(std across runs in parentheses); answer benchmarks: accuracy %. "
        "Scores from different judges (model and prompt) do not compare. "
        '"ungraded" counts samples whose grading failed: left out of the score, not counted as 0.',
    ]
    if published:
        metrics = ", ".join(f"{b}: {PAPER_METRIC[b]}" for b in benches if b in PAPER_METRIC)
        notes.append(f"Rows labelled `paper:` are the QED-Nano paper's published numbers ({metrics}), "
                     "for reference only: another judge and setup, not comparable as is.")
    else:
        notes.append("The paper published no numbers for these benchmarks.")
    return ["# Evaluation report", "", *_table(header, rows), "", *notes, ""]


def _detail(bench, kind, models, groups, summaries, k) -> list[str]:
    present = [m for m in models if (m, bench) in groups]
    score_col = "accuracy %" if kind == "answer" else f"avg@{k} (std)"
    header = ["Model", "Judge", score_col, "runs %", "pass@1", f"pass@{k}", "tokens/sample", "failed gradings"]
    rows, kinds_lines = [], []
    for m in present:
        s, recs = summaries[m, bench], groups[m, bench]
        failed = _failed(recs)
        runs = ", ".join(_pct(x) for x in s.get("runs") or []) or DASH
        tokens = DASH if s.get("tokens_mean") is None else f"{float(s['tokens_mean']):.0f}"
        share = f"{failed} of {len(recs)} ({100 * failed / len(recs):.1f}%)"
        passes = [_pct(s.get("pass_at_1")), _pct(s.get("pass_at_k"))]
        rows.append([m, _judges(recs), _score(s, kind), runs, *passes, tokens, share])
        errors = Counter((r.error or "unknown").split(":", 1)[0] for r in recs if not r.graded)
        if errors:
            kinds_lines.append(f"- {m}: " + ", ".join(f"{e} x{n}" for e, n in errors.items()))
    lines = [f"## {bench} ({kind} benchmark)", "", *_table(header, rows), ""]
    if kinds_lines:
        lines += ["Failed gradings by kind:", "", *kinds_lines, ""]
    for key, title in (("by_category", "Category"), ("by_level", "Level")):
        per_model = {m: summaries[m, bench].get(key) or {} for m in present}
        names = list(dict.fromkeys(n for d in per_model.values() for n in d))
        if names:
            table = [[n] + [_pct(per_model[m].get(n)) for m in present] for n in names]
            lines += [f"{title} (mean grade as a % of {MAX_SCORE}):", "", *_table([title, *present], table), ""]
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _write_plots(groups: dict[tuple[str, str], list[EvalRecord]], out: Path) -> list[Path] | None:
    """Two PNGs per (model, benchmark); None when matplotlib is missing."""
    try:  # the object API renders with Agg and never touches pyplot's global state
        from matplotlib.figure import Figure
    except ImportError:
        return None
    paths = []
    scores = list(range(MAX_SCORE + 1))
    for (model, bench), recs in groups.items():
        graded, failed = [r for r in recs if r.graded], [r for r in recs if not r.graded]
        title = f"{model} / {bench}" + (f" (failed gradings: {len(failed)})" if failed else "")
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        levels = list(dict.fromkeys(r.level or "no level" for r in graded)) or ["no level"]
        width = 0.8 / len(levels)
        for i, level in enumerate(levels):
            counts = Counter(r.score for r in graded if (r.level or "no level") == level)
            xs = [s - 0.4 + width * (i + 0.5) for s in scores]
            ax.bar(xs, [counts[s] for s in scores], width, label=level)
        ax.set(xticks=scores, xlabel="score", ylabel="samples", title=f"{title}: scores by level")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small")
        paths.append(out / f"scores_by_level_{_slug(model)}_{_slug(bench)}.png")
        fig.savefig(paths[-1], dpi=80)

        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        ax.scatter([r.tokens for r in graded], [r.score for r in graded], alpha=0.6, label="graded")
        if failed:  # below the axis, never at 0
            xs = [r.tokens for r in failed]
            ax.scatter(xs, [-1] * len(failed), marker="x", color="red", label="grading failed")
        ticks = ([-1] if failed else []) + scores
        ax.set_yticks(ticks, ["failed" if t < 0 else str(t) for t in ticks])
        ax.set(xlabel="generated tokens", ylabel="score", title=f"{title}: score vs tokens")
        ax.legend(fontsize="small")
        paths.append(out / f"score_vs_tokens_{_slug(model)}_{_slug(bench)}.png")
        fig.savefig(paths[-1], dpi=80)
    return paths
