"""``qed data rubrics``: 7-point marking schemes from problem + official solution.

A grader model writes each scheme (the prompt in ``prompts.py``, or a file of the
user's with ``{problem}`` and ``{solution}``); the reply is cut to the scheme
(``rubric_check.clean_rubric``) and checked (``rubric_check.check_rubric``). A scheme
that fails the check is asked for again, up to ``max_attempts`` requests per problem
in all; one still failing is kept with its issues listed (``on_invalid: keep``) or
left out (``drop``), and counted either way. Every reply is stored as it arrives
(``requests.jsonl``, keyed ``<id>#<attempt>``): a killed run resumes where it stopped.
Output ``rubrics.jsonl``: the input's columns plus ``rubrics`` (FineProofs-RL's
column), ``rubric_ok``, ``rubric_issues`` and ``rubric_attempts``.

Reference (the released pipeline): Gemini 3 Pro with the problem and the official
solution, one scheme per problem; its checker is not released.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qed_lightning.data_pipeline.inputs import read_inputs
from qed_lightning.data_pipeline.prompts import RUBRIC_PROMPT
from qed_lightning.data_pipeline.requests import CallSettings, run_requests
from qed_lightning.data_pipeline.rubric_check import check_rubric, clean_rubric
from qed_lightning.data_pipeline.store import ResultStore
from qed_lightning.data_pipeline.push import check_push
from qed_lightning.data_pipeline.summary import Summary, write_jsonl
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.placeholders import fill, load_template

__all__ = ["INVALID_POLICIES", "rubrics"]

INVALID_POLICIES = ("keep", "drop")


def _state(store: ResultStore, pid: str, max_attempts: int) -> tuple[str, int, dict[str, Any] | None]:
    """(``valid`` | ``invalid`` | ``todo``, next attempt index, last usable reply row)."""
    last = None
    for attempt in range(max_attempts):
        row = store.get(f"{pid}#{attempt}")
        if row is None or row.get("error") is not None:
            return "todo", attempt, last
        last = row
        if check_rubric(clean_rubric(row.get("completion") or "")).ok:
            return "valid", attempt + 1, row
    return "invalid", max_attempts, last


def rubrics(
    client: CompletionClient,
    input: str,
    output_dir: str,
    problem_column: str = "problem",
    solution_column: str = "solution",
    id_column: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    prompt_file: str | None = None,
    max_attempts: int = 2,
    on_invalid: str = "keep",
    calls: CallSettings = CallSettings(),
    on_bad_row: str = "error",
    limit: int | None = None,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """Writes ``rubrics.jsonl`` and ``summary.json`` in ``output_dir``.

    Args:
        client: The grader model (``OpenAICompatibleClient``, ``InProcessVLLMClient``).
        input: Problems with official solutions: a local file or a hub dataset id.
        output_dir: Where ``requests.jsonl`` (the resumable store) and the outputs go.
        problem_column, solution_column, id_column: Input columns.
        config_name, split, revision: Hub dataset selection.
        prompt_file: A prompt of your own with ``{problem}`` and ``{solution}``; None: the built-in one.
        max_attempts: Requests per problem in all (a scheme failing the check is asked again).
        on_invalid: ``keep`` (with ``rubric_ok: false`` and its issues) or ``drop`` a scheme
            still failing the check after ``max_attempts``.
        calls: Request chunking and concurrency (see ``CallSettings``).
        on_bad_row: ``error`` or ``skip`` (count) bad input rows.
        limit: Use only the first ``limit`` problems.
        push_to_hub: Upload the output folder (data files, card, summary) to this hub
            dataset repo (``owner/name``; created private), the token from ``HF_TOKEN``
            only, checked before any work.
    """
    check_push(push_to_hub)
    if on_invalid not in INVALID_POLICIES:
        raise ValueError(f"on_invalid must be one of {INVALID_POLICIES}, got {on_invalid!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    template = load_template(prompt_file, RUBRIC_PROMPT, ('problem', 'solution'), "rubric")
    out = Path(output_dir)
    rows, bad = read_inputs(input, {"problem": problem_column, "solution": solution_column},
                            required=("problem", "solution"), id_column=id_column, config_name=config_name,
                            split=split, revision=revision, on_bad_row=on_bad_row)
    rows = rows[:limit] if limit else rows
    summary = Summary("rubrics")
    summary.add("problems", len(rows))
    with ResultStore(out / "requests.jsonl") as store:
        failed_now: set[str] = set()  # a failed call is asked again by the next run, not this one
        while True:  # one round per attempt: only the schemes that failed the check go again
            todo = []
            for r in rows:
                state, attempt, _ = _state(store, r.id, max_attempts)
                if state == "todo" and r.id not in failed_now:
                    prompt = fill(template, problem=r.text["problem"], solution=r.text["solution"])
                    todo.append((f"{r.id}#{attempt}", JudgeRequest(prompt), {"id": r.id, "attempt": attempt}))
            if not todo:
                break
            counts = run_requests(client, todo, store, calls, desc="rubrics")
            failed_now.update(fields["id"] for key, _, fields in todo if not store.done(key))
            summary.add("requests_sent", counts.sent)
            summary.add("failed_calls", counts.failed)
            summary.add("prompt_tokens", counts.prompt_tokens)
            summary.add("completion_tokens", counts.completion_tokens)
        written = []
        for r in rows:
            state, attempts, last = _state(store, r.id, max_attempts)
            if last is None:
                summary.drop("failed_request")
                continue
            scheme = clean_rubric(last.get("completion") or "")
            check = check_rubric(scheme)
            summary.add("valid" if check.ok else "invalid")
            summary.add("regenerated", attempts - 1)  # replies beyond the first
            if not check.ok and on_invalid == "drop":
                summary.drop("invalid_rubric")
                continue
            written.append({**r.values, "rubrics": scheme, "rubric_ok": check.ok, "rubric_issues": list(check.issues),
                            "rubric_attempts": attempts})
    summary.add("kept", write_jsonl(out / "rubrics.jsonl", written))
    summary.add("bad_rows", bad.total)
    summary.extra["bad_rows_by_reason"] = dict(bad.counts)
    summary.write(out, push_to_hub=push_to_hub)
    return summary.as_dict()
