"""The evaluation report: ``report.md`` (a table in the paper's shape, then the paper's own
numbers as a labelled reference table, then per-benchmark detail), ``records.jsonl`` (every
generation and verdict) and PNG plots.

Summary contract. ``summarize(records, k, failed_gradings) -> dict`` is called once per
(model, benchmark, judge); the real one is ``qed_lightning.evaluation.metrics.summarize_records``.
Keys:

    avg          avg@k: mean grade as a % of 7 over the k runs
    spread       std across the k runs' %, None with one run
    runs         [per-run %] (run i = the records with ``sample == i``)
    pass_at_1    %, pass_at_k: % (a "pass" as metrics defines it)
    accuracy     % correct, for answer benchmarks (None elsewhere)
    splits       {split: avg %}, e.g. PB-Basic / PB-Advanced (optional)
    tokens_mean  mean generated tokens per sample
    by_category  {category: avg %}; by_level: {level: avg %}
    by_rule      {rule: the score keys above under that rule for failed gradings} (optional)

A missing key or a None prints as "–". Failed gradings (``score is None``) are counted
from the records themselves, so the counts match records.jsonl, and every cell with
failures says how many and, when the other rule gives another number, that number too.

Verdicts of different judges never make one number: records are grouped by (model,
benchmark, judge), and a model graded by two judges gets a row per judge.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qed_lightning.evaluation.paper_results import PAPER_K, PAPER_METRIC, paper_results
from qed_lightning.evaluation.records import MAX_SCORE, EvalRecord

__all__ = ["ReportPaths", "Summarize", "write_report"]

Summarize = Callable[[list[EvalRecord], int, str], dict[str, Any]]
NO_PLOTS = "Plots skipped: matplotlib is not installed (it comes with the `dev` extra)."
DASH = "–"
# How a cell names the number under the other rule for failed gradings.
OTHER_RULE = {"zero": "with failed as 0", "leave_out": "without failed"}
RULE_NOTE = {
    "zero": "count as 0 (`failed_gradings: zero`, the rule of the released stats.py over several runs)",
    "leave_out": "are left out of every mean (`failed_gradings: leave_out`)",
}
Group = tuple[str, str, str]  # (model, benchmark, judge)


@dataclass(frozen=True)
class ReportPaths:
    """What ``write_report`` wrote."""

    markdown: Path
    plots: list[Path]
    jsonl: Path


def _record_key(r) -> tuple:
    return (r.model, r.benchmark, r.judge, r.problem_id, r.sample)


def _records_not_reported(jsonl: Path, records: Sequence) -> list:
    """Records already in ``jsonl`` that this report does not cover (another problem
    subset, e.g. a rerun with --limit): kept, so rewriting the file loses nothing."""
    if not jsonl.exists():
        return []
    covered = {_record_key(r) for r in records}
    latest: dict[tuple, object] = {}
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = EvalRecord.from_dict(json.loads(line))
            if _record_key(record) not in covered:
                latest[_record_key(record)] = record  # the newest line of an item counts
    return list(latest.values())


def write_report(
    records: Iterable[EvalRecord],
    out_dir: str | Path,
    k: int,
    summarize: Summarize | None = None,
    benchmark_kinds: dict[str, str] | None = None,
    failed_gradings: str = "zero",
    skipped_rows: dict[str, int] | None = None,
) -> ReportPaths:
    """Write ``report.md``, ``records.jsonl`` and the plots under ``out_dir``.

    Args:
        records: Graded samples, any number of models, benchmarks and judges.
        out_dir: Created if missing.
        k: Runs per problem (avg@k, pass@k).
        summarize: ``summarize(records, k, failed_gradings) -> dict`` (module
            docstring); defaults to ``metrics.summarize_records``.
        benchmark_kinds: ``{benchmark: "proof" | "answer"}``; a benchmark not listed is
            an answer benchmark if its name contains "answer", else a proof benchmark.
        failed_gradings: How failed gradings count in the headline numbers: ``zero``
            (the released code's rule) or ``leave_out``.
        skipped_rows: Benchmark rows left out as bad (``on_bad_row: skip``), by reason.
    """
    if failed_gradings not in RULE_NOTE:
        raise ValueError(f"failed_gradings must be one of {sorted(RULE_NOTE)}, got {failed_gradings!r}")
    if summarize is None:
        from qed_lightning.evaluation.metrics import summarize_records as summarize
    records = list(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[Group, list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.model, r.benchmark, r.judge or "unnamed judge"), []).append(r)
    benches = list(dict.fromkeys(b for _, b, _ in groups))
    given = benchmark_kinds or {}
    kinds = {b: given.get(b) or ("answer" if "answer" in b else "proof") for b in benches}
    summaries = {key: summarize(recs, k, failed_gradings) for key, recs in groups.items()}

    jsonl = out / "records.jsonl"
    kept = _records_not_reported(jsonl, records)
    jsonl.write_text("".join(r.to_json() + "\n" for r in kept + list(records)), encoding="utf-8")
    plots = _write_plots(groups, out)
    lines = _headline(benches, kinds, groups, summaries, k, failed_gradings)
    lines += _skipped_rows(skipped_rows)
    lines += _published(benches, kinds, k)
    for bench in benches:
        lines += _detail(bench, kinds[bench], groups, summaries, k)
    lines += ["## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots] if plots is not None else [NO_PLOTS]
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ReportPaths(markdown, plots or [], jsonl)


def _skipped_rows(counts: dict[str, int] | None) -> list[str]:
    """A note under the headline when benchmark rows were skipped as bad: the scores
    cover fewer problems than the benchmark has."""
    if not counts or not sum(counts.values()):
        return []
    by_reason = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
    return [f"Benchmark rows skipped as bad (on_bad_row: skip): {sum(counts.values())} ({by_reason}); "
            "the run's log names them.", ""]


def _pct(x: Any) -> str:
    return DASH if x is None else f"{float(x):.1f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _failed(recs: list[EvalRecord]) -> int:
    return sum(not r.graded for r in recs)


def _score(summary: dict, kind: str) -> str:
    """accuracy for answer benchmarks, avg@k (spread) for proofs."""
    if kind == "answer":
        return _pct(summary.get("accuracy", summary.get("avg")))
    spread = summary.get("spread")
    return _pct(summary.get("avg")) + ("" if spread is None else f" ({float(spread):.1f})")


def _with_failures(text: str, summary: dict, failed: int, pick: Callable[[dict], str], count: bool = True) -> str:
    """``text`` plus, when gradings failed, their count (``count``) and the other rule's
    number where it differs."""
    if not failed:
        return text
    rule = summary.get("failed_gradings")
    others = [f"{pick(numbers)} {OTHER_RULE[name]}" for name, numbers in (summary.get("by_rule") or {}).items()
              if name != rule and name in OTHER_RULE and pick(numbers) != text]
    return "; ".join([text] + ([f"{failed} failed"] if count else []) + others)


def _splits(benches: list[str], summaries: dict[Group, dict]) -> dict[str, list[str]]:
    """benchmark -> its split names (PB-Basic, PB-Advanced...), in the summaries' order."""
    return {b: list(dict.fromkeys(n for (_, bb, _), s in summaries.items() if bb == b for n in s.get("splits") or {}))
            for b in benches}


def _header(benches: list[str], kinds: dict[str, str], splits: dict[str, list[str]], metric: str) -> list[str]:
    cols = []
    for b in benches:
        if kinds[b] == "answer":
            cols.append(f"{b} accuracy %")
            continue
        cols.append(f"{b} {metric} (std)")
        cols += [f"{b} {name} {metric}" for name in splits[b]]
    return cols


def _rows_of(model: str, benches: list[str], groups: dict[Group, list[EvalRecord]]) -> list[dict[str, str]]:
    """A model's headline rows: row i holds the i-th judge of each benchmark (a model
    graded by one judge per benchmark has one row)."""
    judges = {b: [j for m, bb, j in groups if m == model and bb == b] for b in benches}
    return [{b: js[i] for b, js in judges.items() if i < len(js)} for i in range(max(map(len, judges.values())))]


def _headline(benches, kinds, groups, summaries, k, rule) -> list[str]:
    splits = _splits(benches, summaries)
    header = ["Model", "Source", "Judge"] + _header(benches, kinds, splits, f"avg@{k}")
    rows = []
    for m in dict.fromkeys(m for m, _, _ in groups):
        for judges in _rows_of(m, benches, groups):
            judge = "; ".join(f"{b}: {j}" for b, j in judges.items())
            if len(set(judges.values())) == 1:
                judge = next(iter(judges.values()))
            cells = []
            for b in benches:
                key = (m, b, judges.get(b))
                s, failed = (summaries[key], _failed(groups[key])) if key in groups else ({}, 0)
                if kinds[b] == "answer":
                    cells.append(_with_failures(_score(s, "answer"), s, failed, lambda x: _score(x, "answer"))
                                 if s else DASH)
                    continue
                cells.append(_with_failures(_score(s, "proof"), s, failed, lambda x: _score(x, "proof"))
                             if s else DASH)
                for name in splits[b]:
                    pick = lambda x, name=name: _pct((x.get("splits") or {}).get(name))  # noqa: E731
                    # the count is the benchmark cell's; a split cell adds the other rule's number only
                    cells.append(_with_failures(pick(s), s, failed, pick, count=False) if s else DASH)
            rows.append([m, f"this evaluation (k={k})", judge] + cells)
    notes = [
        f"Proof benchmarks: avg@{k} = mean grade as a % of {MAX_SCORE} over this evaluation's {k} runs "
        "(std across runs in parentheses); answer benchmarks: accuracy %. "
        "Scores from different judges (model and prompt) do not compare, so each judge has its own row. "
        f"Failed gradings (judge errors, unreadable or off-scale verdicts, failed generations) {RULE_NOTE[rule]}; "
        "a cell with failures gives their count and, where it differs, the number under the other rule.",
    ]
    return ["# Evaluation report", "", *_table(header, rows), "", *notes, ""]


def _published_cell(r) -> str:
    return _pct(r.value) + ("" if r.spread is None else f" ({r.spread:.1f})")


def _published(benches, kinds, k) -> list[str]:
    """The paper's numbers in a table of their own: they are avg@3, whatever this run's k."""
    published = paper_results(benches)
    if not published:
        return ["The paper published no numbers for these benchmarks.", ""]
    shown = [b for b in benches if b in PAPER_METRIC]
    header = ["Model", "Source", "Judge"] + [f"{b} {PAPER_METRIC[b]} (paper)" for b in shown]
    by_model: dict[str, dict[str, Any]] = {}
    for r in published:
        by_model.setdefault(r.model, {})[r.benchmark] = r
    rows = []
    for model, cells in by_model.items():
        first = next(iter(cells.values()))
        provenance = "; ".join(dict.fromkeys(r.provenance for r in cells.values()))
        rows.append([f"paper: {model}", provenance, first.judge]
                    + [_published_cell(cells[b]) if b in cells else DASH for b in shown])
    notes = [f"The QED-Nano paper's published numbers, for reference only: another judge and setup, not "
             f"comparable as is. Proof benchmarks there are avg@{PAPER_K} with the std across its {PAPER_K} runs "
             "in parentheses"
             + ("." if k == PAPER_K else f"; this evaluation's are avg@{k}.")
             + " Its failed gradings count as 0 (the released stats.py); its per-split (PB-Basic, PB-Advanced) "
             "numbers are not in this table's source."]
    return ["## Published numbers (QED-Nano paper)", "", *_table(header, rows), "", *notes, ""]


def _detail(bench, kind, groups, summaries, k) -> list[str]:
    present = [key for key in groups if key[1] == bench]
    names = {key: key[0] if sum(m == key[0] for m, _, _ in present) == 1 else f"{key[0]} ({key[2]})"
             for key in present}  # a model with two judges: one column per judge in the breakdowns
    score_col = "accuracy %" if kind == "answer" else f"avg@{k} (std)"
    header = ["Model", "Judge", score_col, "runs %", "pass@1", f"pass@{k}", "tokens/sample", "calls/sample",
              "failed gradings"]
    rows, kinds_lines, other_lines = [], [], []
    for key in present:
        s, recs = summaries[key], groups[key]
        failed = _failed(recs)
        runs = ", ".join(_pct(x) for x in s.get("runs") or []) or DASH
        tokens = DASH if s.get("tokens_mean") is None else f"{float(s['tokens_mean']):.0f}"
        calls = DASH if s.get("calls_mean") is None else f"{float(s['calls_mean']):.1f}"
        share = f"{failed} of {len(recs)} ({100 * failed / len(recs):.1f}%)"
        passes = [_pct(s.get("pass_at_1")), _pct(s.get("pass_at_k"))]
        rows.append([key[0], key[2], _score(s, kind), runs, *passes, tokens, calls, share])
        errors = Counter((r.error or "unknown").split(":", 1)[0] for r in recs if not r.graded)
        if errors:
            kinds_lines.append(f"- {names[key]}: " + ", ".join(f"{e} x{n}" for e, n in errors.items()))
        for name, other in (s.get("by_rule") or {}).items():
            if failed and name != s.get("failed_gradings") and name in OTHER_RULE:
                numbers = [_score(other, kind), _pct(other.get("pass_at_1")), _pct(other.get("pass_at_k"))]
                if numbers != [_score(s, kind), *passes]:
                    other_lines.append(f"- {names[key]}, {OTHER_RULE[name]}: {score_col} {numbers[0]}, "
                                       f"pass@1 {numbers[1]}, "
                                       f"pass@{k} {numbers[2]}")
    lines = [f"## {bench} ({kind} benchmark)", "", *_table(header, rows), ""]
    if kinds_lines:
        lines += ["Failed gradings by kind:", "", *kinds_lines, ""]
    if other_lines:
        lines += ["With the other rule for failed gradings:", "", *other_lines, ""]
    for key_name, title in (("splits", "Split"), ("by_category", "Category"), ("by_level", "Level")):
        per = {key: summaries[key].get(key_name) or {} for key in present}
        rows_names = list(dict.fromkeys(n for d in per.values() for n in d))
        if rows_names:
            table = [[n] + [_pct(per[key].get(n)) for key in present] for n in rows_names]
            lines += [f"{title} (avg@{k}, mean grade as a % of {MAX_SCORE}):", "",
                      *_table([title, *(names[key] for key in present)], table), ""]
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _write_plots(groups: dict[Group, list[EvalRecord]], out: Path) -> list[Path] | None:
    """Two PNGs per (model, benchmark, judge); None when matplotlib is missing."""
    try:  # the object API renders with Agg and never touches pyplot's global state
        from matplotlib.figure import Figure
    except ImportError:
        return None
    paths = []
    scores = list(range(MAX_SCORE + 1))
    for (model, bench, judge), recs in groups.items():
        graded, failed = [r for r in recs if r.graded], [r for r in recs if not r.graded]
        # the judge in the name only when this model has several judges on this benchmark
        several = sum(m == model and b == bench for m, b, _ in groups) > 1
        name = f"{_slug(model)}_{_slug(bench)}" + (f"_{_slug(judge)}" if several else "")
        title = f"{model} / {bench}" + (f" / {judge}" if several else "")
        title += f" (failed gradings: {len(failed)})" if failed else ""
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
        paths.append(out / f"scores_by_level_{name}.png")
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
        paths.append(out / f"score_vs_tokens_{name}.png")
        fig.savefig(paths[-1], dpi=80)
    return paths
