"""Every evaluation of one benchmark side by side: score, tokens and calls per problem.

``qed eval`` writes each run (model and mode: single turn, RC, a scaffold) into its own
folder under ``<output_dir>/<benchmark>/``; after each run, ``comparison.md`` there is
rewritten from every folder's ``records.jsonl``, so test-time compute strategies can be
compared per token. The paper's Table-2 rows follow in a table of their own, labelled as
third-party numbers.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from qed_lightning.evaluation.metrics import summarize_records
from qed_lightning.evaluation.paper_results import PAPER_SCAFFOLDS
from qed_lightning.evaluation.records import EvalRecord

__all__ = ["write_comparison"]

log = logging.getLogger(__name__)
DASH = "–"


def _latest_records(path: Path) -> list[EvalRecord]:
    latest: dict[tuple, EvalRecord] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            r = EvalRecord.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        latest[(r.model, r.judge, r.problem_id, r.sample)] = r
    return list(latest.values())


def _fmt(x, spec: str) -> str:
    return DASH if x is None else format(float(x), spec)


def write_comparison(benchmark_dir: str | Path, k: int, failed_gradings: str = "zero") -> Path:
    """Writes ``comparison.md`` in ``benchmark_dir`` from its runs; returns its path."""
    root = Path(benchmark_dir)
    rows = []
    for jsonl in sorted(root.glob("*/records.jsonl")):
        groups: dict[tuple[str, str], list[EvalRecord]] = {}
        for r in _latest_records(jsonl):
            groups.setdefault((r.model, r.judge), []).append(r)
        for (model, judge), recs in sorted(groups.items()):
            s = summarize_records(recs, k, failed_gradings)
            rows.append([model, judge, _fmt(s.get("avg"), ".1f"), str(s["problems"]),
                         _fmt(s.get("tokens_mean"), ",.0f"), _fmt(s.get("calls_mean"), ".1f"),
                         f"{s['failed']} of {s['total']}"])
    lines = [f"# {root.name}: every evaluated model and mode", "",
             f"avg@{k} as a % of 7 (failed gradings: {failed_gradings}); tokens are generated tokens per "
             "problem-sample over all of its calls, reasoning included; calls are model calls per problem-sample "
             "(a scaffold's own judge calls not included). Rows graded by different judges do not compare.", "",
             "| Run | Judge | score | problems | tokens/problem | calls/problem | failed gradings |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## The paper's test-time compute comparison (third-party numbers)", "",
              "QED-Nano on IMO-ProofBench as reported in the paper's Table 2, read from third-party notes and not "
              "verified against the paper; tokens per problem as those notes give them (the released evaluation "
              "sums generated tokens, reasoning included, per problem run); calls per problem from the released "
              "code's settings. Its judge and setup are not this run's.", "",
              "| Mode | Scaffold | IMO-ProofBench score | tokens/problem | calls/problem | source |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {p.mode} | {p.name} | {p.score:.1f} | {p.tokens:,} | {p.calls} | {p.provenance} |"
              for p in PAPER_SCAFFOLDS]
    out = root / "comparison.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
