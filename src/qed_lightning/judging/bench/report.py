"""The bench's report: markdown tables, two PNGs per run, and the comparison of two runs.

``report.md`` holds the metrics table (each value with its bootstrap interval over
problems), the paired difference of each judge to the first, failures by kind, costs,
each judge's per-problem breakdown and confusion table. ``confusion.png`` draws the
confusion heatmaps, ``errors.png`` the histogram of grader - human per judge
(matplotlib, imported only here and only when plots are asked for).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from qed_lightning.judging.bench import bootstrap
from qed_lightning.judging.bench.metrics import METRICS

__all__ = ["REPORT_FILE", "compare_runs", "write_report"]

REPORT_FILE, COMPARE_FILE = "report.md", "compare.md"
# metric -> (column title, which way is better)
TITLES = {
    "mae": ("MAE (points)", "lower"),
    "advantage_error": ("advantage error (points)", "lower"),
    "bucket_accuracy": ("bucket accuracy", "higher"),
    "order_consistency": ("order consistency (ties must match)", "higher"),
    "order_consistency_le": ("order consistency (released code's <= rule)", "higher"),
    "mean_signed_error": ("mean signed error (+ = lenient)", "closer to 0"),
    "failure_rate": ("failure rate", "lower"),
    "tokens_mean": ("grader tokens per proof (mean)", "lower"),
}


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _with_ci(value: Any, interval: Any) -> str:
    return _num(value) + (f" [{_num(interval[0])}, {_num(interval[1])}]" if interval else "")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def _metrics_rows(judges: dict[str, dict]) -> list[list[str]]:
    return [[TITLES[m][0], TITLES[m][1], *(_with_ci(j["metrics"][m], j["intervals"][m]) for j in judges.values())]
            for m in METRICS]


def _paired_rows(paired: dict[str, dict]) -> list[list[str]]:
    rows = []
    for label, diffs in paired.items():
        for m in METRICS:
            d = diffs[m]
            ci = d["interval"]
            verdict = ("n/a" if ci is None else "differs" if ci[0] > 0 or ci[1] < 0
                       else "same in every draw" if ci[0] == ci[1] == 0 else "not resolved")
            rows.append([label, TITLES[m][0], _with_ci(d["diff"], ci), verdict])
    return rows


def write_report(summary: dict[str, Any], out_dir: Path, plots: bool = True) -> Path:
    """Writes ``report.md`` (and the PNGs) for a run's summary; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    judges, level = summary["judges"], summary["level"]
    labels = list(judges)
    lines = [
        "# Grader benchmark", "",
        f"Data: `{summary['input']}` (layout `{summary['layout']}`): {summary['proofs']} proofs of "
        f"{summary['problems']} problems" + (f", {summary['skipped_rows']} bad rows skipped "
                                             f"{summary['skipped_by_reason']}" if summary["skipped_rows"] else "")
        + f". Failures: `{summary['failures']}` ({summary['failures_means']}).",
        f"Brackets: {level:.0%} percentile bootstrap intervals over problems ({summary['n_boot']} replicates, "
        f"seed {summary['seed']}).", "",
        "## Metrics", "",
        *_table(["metric", "better", *labels], _metrics_rows(judges)),
    ]
    if summary["paired"]:
        lines += [f"## Paired differences to `{summary['paired_vs']}`", "",
                  "Each judge minus the baseline on the same bootstrap draws of problems; \"differs\" when the "
                  "interval excludes 0.", "",
                  *_table(["judge", "metric", "difference", "reading"], _paired_rows(summary["paired"]))]
    lines += ["## Failures and cost", "",
              *_table(["judge", "proofs", "failures by kind", "tokens p95", "tokens max", "proofs with tokens",
                       "graded this run", "wall s per proof"],
                      [[lb, j["proofs"], j["failures_by_kind"] or "none", _num(j["tokens_p95"], 1),
                        _num(j["tokens_max"]), j["tokens_counted"], j["graded_this_run"],
                        _num(j["wall_s_per_proof"], 4)] for lb, j in judges.items()]),
              "Tokens are those the grader generated for a proof in the run that graded it (reasoning included, "
              "prompt excluded, as the server reports them); cache hits and empty answers made no call.", ""]
    for label, j in judges.items():
        lines += [f"## `{label}` ({j['judge']}) per problem", "",
                  *_table(["problem", "proofs", "human mean", "grader mean", "MAE", "signed error",
                           "advantage error", "order consistency", "failures"],
                          [[p["problem"], p["proofs"], _num(p["human_mean"], 2), _num(p["grader_mean"], 2),
                            _num(p["mae"], 2), _num(p["mean_signed_error"], 2), _num(p["advantage_error"], 2),
                            _num(p["order_consistency"], 2), p["failures"]] for p in j["per_problem"]]),
                  "Confusion (rows: human grade, columns: grader score; `fail`: no verdict):", "",
                  *_table(["human \\ grader", *map(str, range(8)), "fail"],
                          [[h, *row] for h, row in enumerate(j["confusion"])])]
    if plots:
        _plots(judges, out_dir)
        lines += ["![confusion](confusion.png)", "", "![errors](errors.png)", ""]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def _plots(judges: dict[str, dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    n = len(judges)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    for ax, (label, j) in zip(axes[0], judges.items()):
        counts = np.asarray(j["confusion"], dtype=float)  # [8, 9]
        ax.imshow(counts, cmap="Blues", origin="lower", aspect="auto")
        for (h, g), c in np.ndenumerate(counts):
            if c:
                ax.text(g, h, int(c), ha="center", va="center", fontsize=8,
                        color="white" if c > counts.max() / 2 else "black")
        ax.set_xticks(range(9), [*map(str, range(8)), "fail"])
        ax.set_yticks(range(8))
        ax.set_xlabel("grader score")
        ax.set_ylabel("human grade")
        ax.set_title(label)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.arange(-7.5, 8.5, 1.0)
    for label, j in judges.items():
        errors = _errors(j)
        ax.hist(errors, bins=bins, histtype="step", linewidth=1.5, label=f"{label} ({len(errors)})")
    ax.set_xlabel("grader - human (points, human rounded; failures left out)")
    ax.set_ylabel("proofs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "errors.png", dpi=100)
    plt.close(fig)


def _errors(judge: dict) -> list[int]:
    # from the confusion table: grader column minus (rounded) human row, failures left out
    return [g - h for h, row in enumerate(judge["confusion"]) for g, c in enumerate(row[:8]) for _ in range(c)]


def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    p = p / "metrics.json" if p.is_dir() else p
    if not p.is_file():
        raise ValueError(f"--compare: {path} is neither a metrics.json nor a bench output directory holding one")
    return json.loads(p.read_text())


def _restricted(table: dict[str, list], keep: list[str]) -> dict[str, np.ndarray]:
    index = {pid: i for i, pid in enumerate(table["problems"])}
    return {k: np.asarray([v[index[p]] for p in keep], dtype=float) for k, v in table.items() if k != "problems"}


def compare_runs(a: str, b: str, out_dir: Path, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """Every judge of run ``a`` and run ``b`` side by side, and the paired difference of
    each judge of ``b`` to each of ``a`` over the problems both runs graded. Writes
    ``compare.md`` and ``compare.json`` into ``out_dir``."""
    runs = {"A": _load(a), "B": _load(b)}
    judges = {f"{run}:{lb}": j for run, s in runs.items() for lb, j in s["judges"].items()}
    paired, notes = {}, []
    for la, ja in runs["A"]["judges"].items():
        for lb, jb in runs["B"]["judges"].items():
            common = [p for p in ja["table"]["problems"] if p in set(jb["table"]["problems"])]
            if not common:
                notes.append(f"`B:{lb}` and `A:{la}` share no problem: no paired difference")
                continue
            if len(common) < max(len(ja["table"]["problems"]), len(jb["table"]["problems"])):
                notes.append(f"`B:{lb}` - `A:{la}`: over the {len(common)} problems both graded")
            paired[f"B:{lb} - A:{la}"] = bootstrap.paired_differences(
                _restricted(jb["table"], common), _restricted(ja["table"], common), n_boot, seed, level)
    lines = ["# Grader benchmark: two runs compared", "", f"A: `{a}` (data `{runs['A']['input']}`, failures "
             f"`{runs['A']['failures']}`)", f"B: `{b}` (data `{runs['B']['input']}`, failures "
             f"`{runs['B']['failures']}`)", "", "Same proofs are needed for a fair comparison: the paired "
             "differences use the problems both runs graded.", "",
             *_table(["metric", "better", *judges], _metrics_rows(judges))]
    if runs["A"]["failures"] != runs["B"]["failures"]:
        notes.append("the runs count failures differently: their agreement metrics are not comparable")
    if paired:
        lines += ["## Paired differences", "", *_table(["pair", "metric", "difference", "reading"],
                                                      _paired_rows(paired))]
    lines += [f"- {note}" for note in notes]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPARE_FILE).write_text("\n".join(lines) + "\n")
    result = {"a": a, "b": b, "paired": paired, "notes": notes}
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"comparison: {out_dir / COMPARE_FILE}", flush=True)
    return result
