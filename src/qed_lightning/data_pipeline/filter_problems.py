"""``qed data filter``: an LLM classifier over problem + solution (+ comments) and a
keep rule.

The classifier answers six flags as JSON (``classify.py``): ``incomplete``,
``difficulty`` (1-10), ``gaps``, ``wrong``, ``disagreement``, ``computational``. The
keep rule (``KeepRule``) is settings: by default problems flagged incomplete, wrong,
disagreement or computational are dropped (the released pipeline drops computational
problems; the rest is this project's default). A reply that cannot be read is counted
as ``unparseable`` and dropped or kept by ``keep.on_unparseable``. Every reply is
stored as it arrives (``requests.jsonl``, keyed by id), so a killed run resumes.
Outputs: ``kept.jsonl`` and ``dropped.jsonl`` (the input's columns plus
``filter_flags`` and, for dropped rows, ``filter_reasons``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qed_lightning.data_pipeline.classify import KeepRule, parse_flags
from qed_lightning.data_pipeline.inputs import InputRow, read_inputs
from qed_lightning.data_pipeline.prompts import FILTER_PROMPT
from qed_lightning.data_pipeline.requests import CallSettings, run_requests
from qed_lightning.data_pipeline.store import ResultStore
from qed_lightning.data_pipeline.push import check_push
from qed_lightning.data_pipeline.summary import Summary, write_jsonl
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.placeholders import fill, load_template

__all__ = ["filter_problems"]


def _comments(row: InputRow, column: str | None) -> str:
    """The comments cell as text: a list (AoPS ``candidates``) becomes ``Comment:`` blocks."""
    value = row.values.get(column) if column else None
    if isinstance(value, (list, tuple)):
        parts = [str(v).strip() for v in value if isinstance(v, str) and v.strip()]
        return "\n\n".join(f"Comment:\n{p}" for p in parts) or "(none)"
    return value.strip() if isinstance(value, str) and value.strip() else "(none)"


def filter_problems(
    client: CompletionClient,
    input: str,
    output_dir: str,
    problem_column: str = "problem",
    solution_column: str = "solution",
    comments_column: str | None = None,
    id_column: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    prompt_file: str | None = None,
    keep: KeepRule = KeepRule(),
    calls: CallSettings = CallSettings(),
    on_bad_row: str = "error",
    limit: int | None = None,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """Classifies every problem; writes ``kept.jsonl``, ``dropped.jsonl`` and ``summary.json``.

    Args:
        client: The classifier model.
        input: Problems with solutions (AoPS: ``AI-MO/aops_raw``'s columns).
        output_dir: Where ``requests.jsonl`` (the resumable store) and the outputs go.
        problem_column, solution_column: Required input columns.
        comments_column: Optional column of comments (text or a list of texts; AoPS: ``candidates``).
        id_column: Column with a row id (None: ``row<index>``).
        config_name, split, revision: Hub dataset selection.
        prompt_file: A prompt of your own with ``{problem}``, ``{solution}``, ``{comments}``.
        keep: The keep rule (see ``KeepRule``).
        calls: Request chunking and concurrency (see ``CallSettings``).
        on_bad_row: ``error`` or ``skip`` (count) bad input rows.
        limit: Use only the first ``limit`` problems.
        push_to_hub: Upload the output folder (data files, card, summary) to this hub
            dataset repo (``owner/name``; created private), the token from ``HF_TOKEN``
            only, checked before any work.
    """
    check_push(push_to_hub)
    template = load_template(prompt_file, FILTER_PROMPT, ('problem',), "filter")
    out = Path(output_dir)
    rows, bad = read_inputs(input, {"problem": problem_column, "solution": solution_column},
                            required=("problem", "solution"), id_column=id_column, config_name=config_name,
                            split=split, revision=revision, on_bad_row=on_bad_row)
    rows = rows[:limit] if limit else rows
    summary = Summary("filter")
    summary.add("problems", len(rows))
    with ResultStore(out / "requests.jsonl") as store:
        todo = [(r.id, JudgeRequest(fill(template, problem=r.text["problem"], solution=r.text["solution"],
                                         comments=_comments(r, comments_column))), {"id": r.id})
                for r in rows if not store.done(r.id)]
        counts = run_requests(client, todo, store, calls, desc="filter")
        kept, dropped = [], []
        for r in rows:
            stored = store.get(r.id)
            if stored is None or stored.get("error") is not None:
                summary.drop("failed_request")
                continue
            flags, why = parse_flags(stored.get("completion") or "")
            if flags is None:
                summary.add("unparseable")
            reasons = keep.reasons(flags)
            row = {**r.values, "filter_flags": flags}
            if reasons:
                for reason in reasons:  # a problem may be dropped for several reasons: each is counted
                    summary.drop(reason)
                dropped.append({**row, "filter_reasons": reasons, "filter_error": why})
            else:
                kept.append(row)
    summary.add("requests_sent", counts.sent)
    summary.add("failed_calls", counts.failed)
    summary.add("prompt_tokens", counts.prompt_tokens)
    summary.add("completion_tokens", counts.completion_tokens)
    summary.add("kept", write_jsonl(out / "kept.jsonl", kept))
    summary.add("dropped_rows", write_jsonl(out / "dropped.jsonl", dropped))
    summary.add("bad_rows", bad.total)
    summary.extra["bad_rows_by_reason"] = dict(bad.counts)
    summary.write(out, push_to_hub=push_to_hub)
    return summary.as_dict()
