"""Results of ``qed eval`` recorded against the export it evaluated.

When the evaluated model is a folder written by ``qed export`` (or a run's
``hf_export``: it holds ``qed_run.json``), the evaluation's headline numbers go into
``<export>/eval_results.json``, one entry per (benchmark, judge, k, answer protocol),
a rerun replacing its entry, and the card (``README.md``) is written again with them.
Any other model (a hub id, a server) is left alone.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from qed_lightning.hub.model_card import EVAL_FILE, FACTS_FILE, rewrite_card

__all__ = ["SUMMARY_KEYS", "record_export_eval"]

log = logging.getLogger(__name__)
# The summary's numbers the card shows (``evaluation.report`` documents the keys).
SUMMARY_KEYS = ("avg", "spread", "pass_at_1", "pass_at_k", "accuracy", "tokens_mean", "runs", "problems", "failed",
                "answer_protocol")


def _same(a: Mapping, b: Mapping) -> bool:
    return all(a.get(k) == b.get(k) for k in ("benchmark", "judge", "samples", "answer_protocol"))


def record_export_eval(model: str | None, benchmark: str, summary: Mapping, judge: str, samples: int) -> Path | None:
    """Add ``summary`` (``evaluate``'s) to the card of the export ``model`` if it is one;
    returns the card's path, or None when ``model`` is not a qed export folder.

    Args:
        model: The evaluated model as the policy names it (a folder, an alias, a hub id).
        benchmark: The benchmark's name.
        summary: The evaluation's summary (``metrics.summarize_records`` plus extras).
        judge: The grader's label, as the report names it.
        samples: k, samples per problem.
    """
    if not model or not (Path(model).expanduser() / FACTS_FILE).is_file():
        return None
    directory = Path(model).expanduser()
    # only answer benchmarks carry an answer protocol (``evaluate``): their score is accuracy
    kind = "answer" if summary.get("answer_protocol") else "proof"
    entry = {"benchmark": benchmark, "kind": kind, "judge": judge, "samples": int(samples),
             **{k: summary.get(k) for k in SUMMARY_KEYS},
             "evaluated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    path = directory / EVAL_FILE
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    entries = [e for e in entries if not _same(e, entry)] + [entry]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entries, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    card = rewrite_card(directory)
    log.info("added the %s results to the model card %s", benchmark, card)
    return card
