"""``qed data decontaminate``: remove training problems that overlap with benchmarks.

Each benchmark is read with the evaluation's own loader (``evaluation/benchmarks.py``:
``imo_proofbench``, ``proofbench``, ``answerbench``, ``fineproofs_rl_test``, or
``custom`` for any file), indexed, and every training problem is checked against it
with the detectors of ``overlap.py`` (normalised exact match, reordered sentences,
n-gram share). Outputs: ``train.jsonl`` (the rows that match nothing, every column
kept), ``removed.jsonl`` (the others, with their matches), ``report.json`` and
``report.md`` (per benchmark: rows indexed, training rows matched, benchmark rows
hit, counts per method and every matched pair) and ``summary.json``.

Not implemented: embedding similarity and an LLM confirmation of candidates (the
n-gram share in the report is where a threshold would be tuned by hand).

FineProofs-RL-test: a third-party dataset card says its 128 problems also appear in
FineProofs-RL. Running this command on FineProofs-RL with ``fineproofs_rl_test`` in
``against`` checks that on the data; a policy trained on FineProofs-RL is evaluated on
``fineproofs_rl_test`` honestly only after this filter.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qed_lightning.data_pipeline.inputs import read_inputs
from qed_lightning.data_pipeline.overlap import BenchmarkIndex
from qed_lightning.data_pipeline.push import check_push
from qed_lightning.data_pipeline.summary import Summary, write_json, write_jsonl

__all__ = ["Against", "decontaminate"]


@dataclass
class Against:
    """One benchmark to check against.

    Args:
        name: Its name in the report (and the ``evaluation`` benchmark name when
            ``benchmark`` is None and the name is one).
        source: Path (.csv/.jsonl/.json/.parquet) or hub id; None: the benchmark's default hub id.
        benchmark: An ``evaluation.benchmarks`` name giving the columns (``custom`` for any file).
        problem_column: Override of the column holding the problem.
        split, revision: Hub split and commit.
        on_bad_row: ``skip`` (default: an unreadable benchmark row is counted in the
            report, and nothing can be checked against it) or ``error``.
    """

    name: str
    source: str | None = None
    benchmark: str | None = None
    problem_column: str | None = None
    split: str | None = None
    revision: str | None = None
    on_bad_row: str = "skip"


def _load(spec: Against) -> tuple[list[tuple[str, str]], dict[str, int]]:
    from qed_lightning.evaluation.benchmarks import BENCHMARKS, load_benchmark_with_report

    kind = spec.benchmark or (spec.name if spec.name in BENCHMARKS else "custom")
    columns = {"problem": spec.problem_column} if spec.problem_column else None
    load = load_benchmark_with_report(kind, spec.source, split=spec.split, revision=spec.revision, columns=columns,
                                      on_bad_row=spec.on_bad_row)
    return [(p.id, p.statement) for p in load.problems], load.skipped_by_reason


_INDEX: BenchmarkIndex | None = None  # the index a forked worker inherits


def _matches(texts: list[str]) -> list[list]:
    return [_INDEX.matches(t) for t in texts]


def _all_matches(index: BenchmarkIndex, texts: list[str], workers: int, chunk: int = 2000) -> list[list]:
    """``index.matches`` of every text, over ``workers`` forked processes (1: in this one)."""
    global _INDEX
    _INDEX = index
    parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    try:
        if workers <= 1 or len(parts) <= 1:
            return [m for part in parts for m in _matches(part)]
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:  # workers share the index, unpickled
            return [m for part in pool.imap(_matches, parts) for m in part]
    finally:
        _INDEX = None


def _cut(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _markdown(report: dict[str, Any], settings: dict[str, Any]) -> str:
    lines = ["# Decontamination report", "",
             f"Detectors: normalised exact match, reordered sentences, {settings['ngram']}-gram share >= "
             f"{settings['min_ngram_overlap']}.", "",
             "| benchmark | rows indexed | rows unreadable | training rows matched | benchmark rows hit | exact "
             "| sentences | ngram |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report.items():
        m = r["by_method"]
        lines.append(f"| {name} | {r['indexed']} | {sum(r['benchmark_rows_skipped'].values())} | "
                     f"{r['matched_train_rows']} | {r['matched_benchmark_rows']} | "
                     f"{m.get('exact', 0)} | {m.get('sentences', 0)} | {m.get('ngram', 0)} |")
    for name, r in report.items():
        if r["pairs"]:
            lines += ["", f"## {name}", ""]
            lines += [f"- `{p['train_id']}` ~ `{p['benchmark_id']}` ({p['method']}, {p['score']})" for p in r["pairs"]]
    return "\n".join(lines) + "\n"


def decontaminate(
    input: str,
    output_dir: str,
    against: list[Against],
    problem_column: str = "problem",
    id_column: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    sources: dict[str, str] | None = None,
    ngram: int = 13,
    min_ngram_overlap: float = 0.5,
    on_bad_row: str = "error",
    workers: int = 1,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """Checks every training problem against every benchmark; writes the filtered set and reports.

    Args:
        input: The training set: ``demo``, a local file or a hub dataset id.
        output_dir: Where ``train.jsonl``, ``removed.jsonl``, ``report.json``/``.md`` and
            ``summary.json`` go.
        against: The benchmarks (see ``Against``).
        sources: Benchmark name -> source, replacing that entry's ``source`` (where the
            CSVs are on this machine: ``--sources '{"imo_proofbench": "<dir>/proofbench_v2.csv"}'``).
        problem_column, id_column: Training-set columns (no id column: ``row<index>``).
        config_name, split, revision: Hub dataset selection of ``input``.
        ngram: n-gram length in tokens (13: the usual choice).
        min_ngram_overlap: Share of the shorter text's n-grams in common that makes an
            n-gram match.
        on_bad_row: ``error`` or ``skip`` (count) bad rows of the training set (each
            benchmark has its own, ``Against.on_bad_row``).
        workers: Processes checking the training problems (forked; 1: none). The
            result does not depend on it.
        push_to_hub: Upload the output folder (data files, card, summary) to this hub
            dataset repo (``owner/name``; created private), the token from ``HF_TOKEN``
            only, checked before any work.

    Returns:
        The summary (also in ``<output_dir>/summary.json``).
    """
    check_push(push_to_hub)
    if not against:
        raise ValueError("decontaminate needs at least one benchmark in against")
    if unknown := sorted(set(sources or {}) - {a.name for a in against}):
        raise ValueError(f"sources names {unknown}, which are not in against ({[a.name for a in against]})")
    against = [dataclasses.replace(a, source=(sources or {}).get(a.name, a.source)) for a in against]
    names = [a.name for a in against]
    if len(set(names)) != len(names):
        raise ValueError(f"against names must be unique, got {names}")
    out, started = Path(output_dir), time.perf_counter()
    index = BenchmarkIndex(ngram, min_ngram_overlap)
    texts: dict[tuple[str, str], str] = {}
    indexed, skipped = {}, {}
    for spec in against:
        items, skipped[spec.name] = _load(spec)
        texts.update({(spec.name, bid): t for bid, t in items})
        indexed[spec.name] = index.add(spec.name, items)
    rows, bad = read_inputs(input, {"problem": problem_column}, id_column=id_column, config_name=config_name,
                            split=split, revision=revision, on_bad_row=on_bad_row)
    report = {name: {"indexed": indexed[name], "benchmark_rows_skipped": skipped[name], "matched_train_rows": 0,
                     "matched_benchmark_rows": 0,
                     "by_method": Counter(), "pairs": []} for name in names}
    hit: dict[str, set[str]] = {name: set() for name in names}
    kept, removed = [], []
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    for row, found in zip(rows, _all_matches(index, [r.text["problem"] for r in rows], workers), strict=True):
        if not found:
            kept.append(row.values)
            continue
        removed.append({**row.values, "contamination": [m.__dict__ for m in found]})
        for name in {m.benchmark for m in found}:
            report[name]["matched_train_rows"] += 1
        for m in found:
            r = report[m.benchmark]
            r["by_method"][m.method] += 1
            hit[m.benchmark].add(m.benchmark_id)
            r["pairs"].append({"train_id": row.id, "benchmark_id": m.benchmark_id, "method": m.method,
                               "score": m.score, "train_text": _cut(row.text["problem"]),
                               "benchmark_text": _cut(texts[(m.benchmark, m.benchmark_id)])})
    for name in names:
        report[name]["matched_benchmark_rows"] = len(hit[name])
        report[name]["by_method"] = dict(report[name]["by_method"])
    settings = {"ngram": ngram, "min_ngram_overlap": min_ngram_overlap}
    write_json(out / "report.json", {"settings": settings, "benchmarks": report})
    (out / "report.md").write_text(_markdown(report, settings), encoding="utf-8")
    summary = Summary("decontaminate")
    summary.add("rows", len(rows))
    summary.add("kept", write_jsonl(out / "train.jsonl", kept))
    write_jsonl(out / "removed.jsonl", removed)
    summary.drop("contaminated", len(removed))
    summary.add("bad_rows", bad.total)
    summary.extra.update(bad_rows_by_reason=dict(bad.counts), settings=settings,
                         matched_per_benchmark={n: report[n]["matched_train_rows"] for n in names},
                         seconds=round(time.perf_counter() - started, 3))
    summary.write(out, push_to_hub=push_to_hub)
    return summary.as_dict()
