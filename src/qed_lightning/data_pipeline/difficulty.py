"""``qed data difficulty``: how hard each problem is for a policy, as FineProofs-RL
measures it.

n rollouts per problem with the RL prompt and sampling (the RL loop's own
``RolloutProducer``: same prompt rendering, per-sample seeds from (seed, id, index),
long prompts skipped and counted), graded by the RL judge against the rubric
(``LLMJudge`` with its verdict cache when ``cache_dir`` is set). Written columns
(FineProofs-RL's): ``scores`` (0-7 per graded rollout), ``rewards`` (score / 7),
``num_rewards``, ``reward_mean`` and ``reward_std`` (population standard deviation,
ddof 0: the released value's convention is not documented), plus ``failed_verdicts``
and ``truncated_rollouts``. A rollout whose grading failed after the judge's retries is
left out of the scores (so ``num_rewards`` may be below n, as in some FineProofs-RL
rows); a truncated rollout scores 0 like in RL. ``data.difficulty_filter`` of the RL
data module reads the result directly.

The planned cost (problems x n rollouts x expected tokens, and the judge calls) is
printed before anything starts. Problems go ``problems_per_call`` at a time; each
finished problem is stored at once (``requests.jsonl``, keyed by id), so a killed run
resumes with the problems it had not finished.

Reference: 128 rollouts of Qwen3-4B-Thinking-2507 per problem, graded by gpt-oss-20b
(``configs/data/difficulty.yaml``).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from qed_lightning.contracts import Problem, SamplingSettings
from qed_lightning.data.bad_rows import BadRows
from qed_lightning.data.judge_ready import problems_for_judge
from qed_lightning.data_pipeline.inputs import InputRow, read_inputs
from qed_lightning.data_pipeline.store import ResultStore
from qed_lightning.data_pipeline.push import check_push
from qed_lightning.data_pipeline.summary import Summary, write_jsonl
from qed_lightning.judging.base import BaseJudge
from qed_lightning.modules.rl_settings import EngineSettings
from qed_lightning.rollouts.prompts import PROOF_PROMPT

__all__ = ["difficulty", "difficulty_columns", "estimate"]


def difficulty_columns(scores: Sequence[int]) -> dict[str, Any]:
    """FineProofs-RL's columns from one problem's scores (0..7)."""
    rewards = [s / 7.0 for s in scores]
    return {"scores": list(scores), "rewards": rewards, "num_rewards": len(rewards),
            "reward_mean": statistics.fmean(rewards) if rewards else None,
            "reward_std": statistics.pstdev(rewards) if rewards else None}


def _problem(r: InputRow) -> Problem:
    return Problem(r.id, r.text["problem"], r.text.get("rubric"), r.text.get("reference_solution"),
                   {"origin": r.origin})


def estimate(producer, rows: Sequence[InputRow], store: ResultStore, problems_per_call: int,
             summary: Summary, progress: bool = True) -> None:
    """Rolls out and grades every problem of ``rows`` not yet in ``store``, storing
    each problem's scores as its chunk finishes."""
    todo = [r for r in rows if not store.done(r.id)]
    summary.add("problems_already_done", len(rows) - len(todo))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="difficulty", unit="problem")
    for start in range(0, len(todo), problems_per_call):
        chunk = todo[start:start + problems_per_call]
        problems = [_problem(r) for r in chunk]
        try:
            batch = producer.produce(problems, step=0)
        except ValueError as err:
            if "too long" not in str(err):
                raise
            for r in chunk:
                store.append({"key": r.id, "error": f"long_prompt: {err}"})
            summary.add("skipped_long_prompts", len(chunk))
            continue
        kept = [chunk[i] for i in producer.last_kept]
        skipped = [r for r in chunk if all(r is not k for k in kept)]
        for r in skipped:
            store.append({"key": r.id, "error": "long_prompt: prompt + max_tokens exceeds the engine's context"})
        summary.add("skipped_long_prompts", len(skipped))
        groups = batch.group_ids.tolist()
        for g, r in enumerate(kept):
            idx = [i for i, gid in enumerate(groups) if gid == g]
            verdicts = [batch.verdicts[i] for i in idx]
            scores = [v.score for v in verdicts if v.ok]
            tokens = sum(len(batch.completions[i].completion_ids) for i in idx)
            row = {"key": r.id, **difficulty_columns(scores), "failed_verdicts": len(verdicts) - len(scores),
                   "truncated_rollouts": sum(batch.completions[i].truncated for i in idx),
                   "completion_tokens": tokens, "error": None if scores else "judge: no rollout was graded"}
            store.append(row)
            summary.add("rollouts", len(idx))
            summary.add("completion_tokens", tokens)
            summary.add("failed_verdicts", row["failed_verdicts"])
        if bar is not None:
            bar.update(len(chunk))
            bar.set_postfix(tokens=summary.counts["completion_tokens"], refresh=False)
    if bar is not None:
        bar.close()


def write_outputs(rows: Sequence[InputRow], store: ResultStore, out: Path, summary: Summary) -> None:
    written = []
    for r in rows:
        stored = store.get(r.id)
        if stored is None or stored.get("error") is not None:
            summary.drop((stored or {}).get("error", "not_done").split(":", 1)[0])
            continue
        cols = {k: stored[k] for k in ("scores", "rewards", "num_rewards", "reward_mean", "reward_std",
                                       "failed_verdicts", "truncated_rollouts")}
        written.append({**r.values, **cols})
    summary.add("kept", write_jsonl(out / "difficulty.jsonl", written))


def difficulty(
    judge: BaseJudge,
    input: str,
    output_dir: str,
    model: str,
    dtype: str = "bfloat16",
    engine: EngineSettings = EngineSettings(),
    sampling: SamplingSettings = SamplingSettings(temperature=0.8, max_tokens=1024, n=128),
    prompt_template: str = PROOF_PROMPT,
    problem_column: str = "problem",
    rubric_column: str | None = "rubrics",
    reference_column: str | None = None,
    id_column: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    problems_per_call: int = 8,
    seed: int = 0,
    expected_completion_tokens: int | None = None,
    on_bad_row: str = "error",
    limit: int | None = None,
    progress: bool = True,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """Writes ``difficulty.jsonl`` (the input's columns + FineProofs-RL's reward columns)
    and ``summary.json`` in ``output_dir``.

    Args:
        judge: The RL judge (``LLMJudge`` with the RL template; set ``cache_dir`` to pay
            for identical gradings once).
        input: Problems with rubrics: a local file or a hub dataset id.
        output_dir: Where ``requests.jsonl`` (the resumable store) and the outputs go.
        model: The policy whose difficulty is measured (alias, directory or hub id).
        dtype: The policy's dtype in the engine (when ``engine.dtype`` is None).
        engine: The rollout engine (``vllm`` in-process, ``served``, ``hf``), as in RL.
        sampling: The RL sampling; ``n`` is the rollouts per problem (reference: 128).
        prompt_template: The RL prompt (``{problem}`` once).
        problem_column, rubric_column, reference_column, id_column: Input columns.
        config_name, split, revision: Hub dataset selection.
        problems_per_call: Problems generated and graded together (a kill loses at most these).
        seed: Seed of every rollout's sampling seed.
        expected_completion_tokens: Mean completion length for the printed cost
            (None: ``sampling.max_tokens``, an upper bound).
        on_bad_row: ``error`` or ``skip`` (count) bad input rows; a problem lacking what
            the judge fills in is one.
        limit: Use only the first ``limit`` problems.
        progress: Show a progress bar.
        push_to_hub: Upload the output folder (data files, card, summary) to this hub
            dataset repo (``owner/name``; created private), the token from ``HF_TOKEN``
            only, checked before any work.
    """
    check_push(push_to_hub)
    from qed_lightning.engines.build import EngineContext, build_engine
    from qed_lightning.models import load_tokenizer, resolve_model_path
    from qed_lightning.rollouts.producer import RolloutProducer

    if problems_per_call < 1:
        raise ValueError(f"problems_per_call must be >= 1, got {problems_per_call}")
    out = Path(output_dir)
    rows, bad = read_inputs(input, {"problem": problem_column, "rubric": rubric_column,
                                    "reference_solution": reference_column},
                            id_column=id_column, config_name=config_name, split=split, revision=revision,
                            on_bad_row=on_bad_row)
    rows = rows[:limit] if limit else rows
    checked = BadRows(on_bad_row, input)
    ok = {p.id for p in problems_for_judge([_problem(r) for r in rows], judge, {
        "statement": problem_column, "rubric": rubric_column, "reference_solution": reference_column}, checked)}
    rows = [r for r in rows if r.id in ok]
    bad.counts.update(checked.counts)
    summary = Summary("difficulty")
    summary.add("problems", len(rows))
    per = expected_completion_tokens or sampling.max_tokens
    plan = {"problems": len(rows), "rollouts_per_problem": sampling.n, "rollouts": len(rows) * sampling.n,
            "expected_completion_tokens": len(rows) * sampling.n * per, "judge_calls": len(rows) * sampling.n}
    summary.extra["planned"] = plan
    print(f"planned: {plan['problems']} problems x {sampling.n} rollouts = {plan['rollouts']} rollouts, about "
          f"{plan['expected_completion_tokens']:,} completion tokens ({per} each) and {plan['judge_calls']} "
          "judge calls (fewer for cached or already finished problems)", flush=True)
    tokenizer = load_tokenizer(model)
    path = resolve_model_path(model)
    eng = build_engine(engine, EngineContext(model_path=path, dtype=dtype, seed=seed, root_dir=str(out)))
    producer = RolloutProducer(eng, judge, tokenizer, sampling, prompt_template=prompt_template, seed=seed)
    with ResultStore(out / "requests.jsonl") as store:
        estimate(producer, rows, store, problems_per_call, summary, progress)
        write_outputs(rows, store, out, summary)
    summary.add("bad_rows", bad.total)
    summary.extra["bad_rows_by_reason"] = dict(bad.counts)
    summary.write(out, push_to_hub=push_to_hub)
    return summary.as_dict()
