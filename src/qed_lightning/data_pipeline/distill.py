"""``qed data distill``: teacher proofs for SFT (FineProofs-SFT's recipe).

k requests per problem go to the teacher (any OpenAI-compatible server, or an
in-process engine for small teachers); each finished request is stored at once
(``requests.jsonl``, keyed ``<id>#<k>``), so a killed run resumes without losing or
repeating a finished request, and a failed request is stored as a failure and asked
again on the next run, never kept as an empty completion. Each completion is then
split at its last ``</think>`` (or the server's reasoning field) into
``reasoning_content`` and ``proof``; truncated completions are counted and, by
default, dropped. Optionally a judge grades each proof (FineProofs-SFT's grade
column). Outputs: ``all.jsonl`` (every usable sample) and ``default.jsonl`` (one per
problem), with FineProofs-SFT's columns.

Keep-one rule (``default.jsonl``): among a problem's usable samples, the one with the
highest grade (ungraded or failed grades rank lowest), ties broken by the lowest
request index. Without a judge that is the first usable sample. FineProofs-SFT's
``default`` config has one row per problem; how its authors chose it is not released.

Reference settings (the released teacher job): the raw problem as the only user
message, ``chat_template_kwargs: {enable_thinking: true}``, temperature 1.0,
max_tokens 124,928, 256 requests in flight, 3 attempts with backoff, a 7,200 s
request timeout (``configs/data/distill.yaml``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qed_lightning.contracts import GradingItem, Problem
from qed_lightning.data.bad_rows import BadRows
from qed_lightning.data.judge_ready import problems_for_judge
from qed_lightning.data_pipeline.inputs import InputRow, read_inputs
from qed_lightning.data_pipeline.requests import CallSettings, run_requests
from qed_lightning.data_pipeline.store import ResultStore
from qed_lightning.data_pipeline.push import check_push
from qed_lightning.data_pipeline.summary import Summary, write_jsonl
from qed_lightning.data_pipeline.think import split_think
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.rollouts.seeds import sample_seed

__all__ = ["KEEP_RULES", "distill", "pick_one"]

log = logging.getLogger(__name__)
KEEP_RULES = ("one_per_problem", "all")
_OWN_COLUMNS = ("problem", "reasoning_content", "proof", "messages")


def request_key(pid: str, k: int) -> str:
    return f"{pid}#{k}"


def pick_one(samples: list[dict[str, Any]], grade_column: str) -> dict[str, Any]:
    """The kept sample of one problem: highest grade, then lowest request index."""
    def rank(s: dict[str, Any]) -> tuple[int, int]:
        grade = s.get(grade_column)
        return (-(grade if isinstance(grade, int) else -1), s["request_idx"])
    return min(samples, key=rank)


def _messages(system_prompt: str | None, user: str) -> tuple[dict[str, str], ...]:
    system = ({"role": "system", "content": system_prompt},) if system_prompt else ()
    return (*system, {"role": "user", "content": user})


def _sample_row(row: InputRow, k: int, stored: dict[str, Any], split, user: str) -> dict[str, Any]:
    out = {c: v for c, v in row.values.items() if c not in _OWN_COLUMNS}
    out.update(problem=row.text["problem"], reasoning_content=split.reasoning, proof=split.proof,
               messages=[{"role": "user", "content": user}, {"role": "assistant", "content": split.proof}],
               problem_id=row.id, request_idx=k, finish_reason=stored.get("finish_reason"),
               usage=stored.get("usage"), truncated=split.truncated)
    return out


def _problem(r: InputRow) -> Problem:
    return Problem(r.id, r.text["problem"], r.text.get("rubric"), r.text.get("reference_solution"), {"origin": r.origin})


def _grade(judge: BaseJudge, samples: list[tuple[InputRow, dict[str, Any]]], output_dir: Path, grade_column: str,
           batch_size: int, summary: Summary) -> None:
    """Grades each sample's proof once (stored in ``grades.jsonl``, so a rerun grades
    only what is missing or failed) and writes the grade into the sample."""
    with ResultStore(output_dir / "grades.jsonl") as grades:
        todo = [(r, s) for r, s in samples if not grades.done(request_key(r.id, s["request_idx"]))]
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            items = [GradingItem(_problem(r), s["proof"]) for r, s in batch]
            for (r, s), verdict in zip(batch, judge.grade(items), strict=True):
                grades.append({"key": request_key(r.id, s["request_idx"]), "score": verdict.score,
                               "error": verdict.error, "origin": verdict.origin})
                summary.add("grade_calls")
            print(f"graded {min(start + batch_size, len(todo))}/{len(todo)}", flush=True)
        for r, s in samples:
            stored = grades.get(request_key(r.id, s["request_idx"])) or {}
            s[grade_column] = stored.get("score") if stored.get("error") is None else None
            if stored.get("error") is not None:
                summary.add("grade_failures")
            else:
                summary.add("graded")


def distill(
    client: CompletionClient,
    input: str,
    output_dir: str,
    problem_column: str = "problem",
    id_column: str | None = None,
    rubric_column: str | None = None,
    reference_column: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    samples_per_problem: int = 1,
    prompt_template: str = "{problem}",
    system_prompt: str | None = None,
    seed: int | None = None,
    thinking: bool = True,
    drop_truncated: bool = True,
    keep: str = "one_per_problem",
    judge: BaseJudge | None = None,
    grade_column: str = "grade",
    grade_batch_size: int = 64,
    calls: CallSettings = CallSettings(),
    on_bad_row: str = "error",
    limit: int | None = None,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """Distils teacher proofs; writes ``all.jsonl``, ``default.jsonl`` and ``summary.json``.

    Args:
        client: The teacher (``OpenAICompatibleClient`` with the server's options in
            ``extra_body``, or ``InProcessVLLMClient``).
        input: Problems: ``demo``, a local file or a hub dataset id.
        output_dir: Where ``requests.jsonl`` (the resumable store) and the outputs go.
        problem_column, id_column: Input columns (no id column: rows are ``row<index>``).
        rubric_column, reference_column: Columns the judge's template may need.
        config_name, split, revision: Hub dataset selection.
        samples_per_problem: Requests per problem (k).
        prompt_template: The user message; ``{problem}`` is replaced by the problem
            (reference: ``{problem}`` alone, the raw problem).
        system_prompt: An optional system message (reference: none).
        seed: Per-request seeds derived from (seed, id, k), for servers that take one;
            None sends none.
        thinking: The teacher thinks: a completion that never closes its thinking is
            truncated. False for a teacher that writes only the proof.
        drop_truncated: Leave truncated completions out of the outputs (they are counted
            either way).
        keep: ``one_per_problem`` (``default.jsonl`` by the rule in the module doc) or
            ``all`` (``default.jsonl`` = ``all.jsonl``).
        judge: Grades each usable proof into ``grade_column``; None: no grading. It
            grades the split proof, so its ``answer_mode`` must be ``whole``.
        grade_column: FineProofs-SFT: ``gemini-3-pro-grade``.
        grade_batch_size: Proofs per ``judge.grade`` call.
        calls: Request chunking and concurrency (see ``CallSettings``).
        on_bad_row: ``error`` or ``skip`` (count) bad input rows.
        limit: Use only the first ``limit`` problems.
        push_to_hub: Upload the output folder (data files, card, summary) to this hub
            dataset repo (``owner/name``; created private), the token from ``HF_TOKEN``
            only, checked before any work.

    Returns:
        The summary (also in ``<output_dir>/summary.json``).
    """
    check_push(push_to_hub)
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    if samples_per_problem < 1:
        raise ValueError(f"samples_per_problem must be >= 1, got {samples_per_problem}")
    if prompt_template.count("{problem}") != 1:
        raise ValueError(f"prompt_template must contain '{{problem}}' exactly once, got {prompt_template!r}")
    if judge is not None and getattr(judge, "answer_mode", "whole") != "whole":
        raise ValueError("distill grades the proof after the split: set the judge's answer_mode: whole "
                         f"(it is {judge.answer_mode!r})")
    out = Path(output_dir)
    rows, bad = read_inputs(input, {"problem": problem_column, "rubric": rubric_column,
                                    "reference_solution": reference_column},
                            id_column=id_column, config_name=config_name, split=split, revision=revision,
                            on_bad_row=on_bad_row)
    rows = rows[:limit] if limit else rows
    if judge is not None:  # every problem the judge cannot grade is a bad row before any call
        checked = BadRows(on_bad_row, input)
        ok = {p.id for p in problems_for_judge(
            [_problem(r) for r in rows], judge,
            {"statement": problem_column, "rubric": rubric_column, "reference_solution": reference_column}, checked)}
        rows = [r for r in rows if r.id in ok]
        bad.counts.update(checked.counts)
    summary = Summary("distill")
    summary.add("problems", len(rows))
    summary.add("requests_planned", len(rows) * samples_per_problem)
    users = {r.id: prompt_template.replace("{problem}", r.text["problem"]) for r in rows}
    with ResultStore(out / "requests.jsonl") as store:
        summary.add("requests_already_done", sum(store.done(request_key(r.id, k)) for r in rows
                                                 for k in range(samples_per_problem)))
        todo = [(request_key(r.id, k),
                 JudgeRequest(users[r.id], messages=_messages(system_prompt, users[r.id]),
                              seed=None if seed is None else sample_seed(seed, 0, r.id, k)),
                 {"id": r.id, "request_idx": k})
                for r in rows for k in range(samples_per_problem) if not store.done(request_key(r.id, k))]
        counts = run_requests(client, todo, store, calls, desc="distill")
        samples: list[tuple[InputRow, dict[str, Any]]] = []
        for r in rows:
            for k in range(samples_per_problem):
                stored = store.get(request_key(r.id, k))
                if stored is None or stored.get("error") is not None:
                    summary.drop("failed_request")
                    continue
                summary.add("prompt_tokens", (stored.get("usage") or {}).get("prompt_tokens") or 0)
                summary.add("completion_tokens", (stored.get("usage") or {}).get("completion_tokens") or 0)
                parts = split_think(stored.get("completion") or "", stored.get("reasoning"),
                                    stored.get("finish_reason"), thinking)
                if parts.truncated:
                    summary.add("truncated")
                reason = parts.drop_reason
                if reason == "empty_proof" or (reason == "truncated" and drop_truncated):
                    summary.drop(reason)
                    continue
                samples.append((r, _sample_row(r, k, stored, parts, users[r.id])))
    summary.add("requests_sent", counts.sent)
    summary.add("failed_calls", counts.failed)
    if judge is not None and samples:
        _grade(judge, samples, out, grade_column, grade_batch_size, summary)
    all_rows = [s for _, s in samples]
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for s in all_rows:
        by_problem.setdefault(s["problem_id"], []).append(s)
    default = all_rows if keep == "all" else [pick_one(group, grade_column) for group in by_problem.values()]
    summary.add("kept_all", write_jsonl(out / "all.jsonl", all_rows))
    summary.add("kept_default", write_jsonl(out / "default.jsonl", default))
    summary.add("problems_without_sample", len(rows) - len(by_problem))
    summary.add("bad_rows", bad.total)
    summary.extra["bad_rows_by_reason"] = dict(bad.counts)
    summary.write(out, push_to_hub=push_to_hub)
    return summary.as_dict()
