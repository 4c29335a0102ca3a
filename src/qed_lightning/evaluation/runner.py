"""``qed eval``: generate k samples per benchmark problem, grade them, write the report.

Its own command rather than Lightning's test loop: under DDP the test loop pads uneven
shards with duplicate samples (which would bias avg@k) and it cannot resume per item.
Generation runs in chunks of problems, one sample index at a time; each chunk's
generations are saved before grading starts, each graded chunk's records as soon as it
is graded (``EvalStore``), so a rerun of the same command only does what is missing.
"""
from __future__ import annotations

import logging
from pathlib import Path

from qed_lightning.contracts import GradingItem, Problem
from qed_lightning.evaluation.answer_check import ANSWER_PROMPT
from qed_lightning.evaluation.answer_grading import ANSWER_PROTOCOLS
from qed_lightning.evaluation.benchmarks import BENCHMARKS, load_benchmark_with_report
from qed_lightning.evaluation.compare import write_comparison
from qed_lightning.evaluation.metrics import summarize_records
from qed_lightning.evaluation.policies import EnginePolicy, ServerPolicy
from qed_lightning.evaluation.records import EvalRecord
from qed_lightning.evaluation.report import write_report
from qed_lightning.evaluation.store import EvalStore
from qed_lightning.hub.eval_results import record_export_eval
from qed_lightning.judging.answer import extract_answer
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.client import CompletionClient
from qed_lightning.reasoning_cache.cycle import run_cycles
from qed_lightning.reasoning_cache.roles import client_generator
from qed_lightning.rollouts.prompts import PROOF_PROMPT
from qed_lightning.scaffolds.base import Scaffold

__all__ = ["evaluate", "judge_label"]

log = logging.getLogger(__name__)
MODES = ("single", "rc", "scaffold")  # or a scaffold's name (``qed_lightning.scaffolds.scaffold_names()``)


def judge_label(judge: BaseJudge | None) -> str:
    """Which grader produced a score: model and prompt (scores of different judges do not compare)."""
    if judge is None:
        return "answer checker"
    client = getattr(judge, "client", None)
    if client is not None:
        model = client.fingerprint().get("model", type(client).__name__)
        template = getattr(judge, "template", None)
        return f"{model} / {getattr(template, 'name', 'custom prompt')}"
    return f"{type(judge).__name__} {getattr(judge, 'rule_path', '')}".strip()


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk")


def evaluate(
    policy: EnginePolicy | ServerPolicy,
    benchmark: str = "demo",
    source: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    columns: dict[str, str] | None = None,
    categories: list[str] | None = None,
    levels: list[str] | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
    on_bad_row: str = "error",
    judge: BaseJudge | None = None,
    answer_protocol: str = "checker",
    samples: int = 3,
    mode: str = "single",
    scaffold: Scaffold | None = None,
    rc_iterations: int = 3,
    summarizer: CompletionClient | None = None,
    prompt_template: str | None = None,
    answer_mode: str = "after_think",
    model_label: str = "model",
    output_dir: str = "runs/eval",
    chunk_size: int = 16,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    failed_gradings: str = "zero",
) -> dict:
    """Evaluates ``policy`` on a benchmark; returns the summary and writes
    ``<output_dir>/<benchmark>/<model_label>/`` (generations, records, report.md, plots).

    Args:
        policy: ``EnginePolicy`` (in-process engine) or ``ServerPolicy`` (OpenAI-compatible server).
        benchmark: A name of ``BENCHMARKS`` (``imo_proofbench``, ``proofbench``, ``answerbench``, ``demo``...).
        source, split, revision: Where to read it (a path or hub id; defaults per benchmark).
        columns: Column mapping over the benchmark's (field -> column name), e.g. for ``custom``.
        categories, levels, ids, limit: Which problems.
        on_bad_row: ``error`` (default: stop, naming file, row and column) or ``skip``
            bad benchmark rows (logged, counted by reason in the summary's
            ``skipped_rows``/``skipped_by_reason`` and in report.md). A problem lacking
            what the judge's template fills in is a bad row, found before generation.
        judge: The grader of proof benchmarks (an ``LLMJudge`` with the benchmark's prompt);
            on answer benchmarks the ``answer_match`` grader of ``answer_protocol``.
        answer_protocol: How answer benchmarks are scored (``ANSWER_PROTOCOLS``):
            ``paper`` (the released evaluation: the judge grades every answer, the final
            boxed one or, without a box, the last lines; the rule checker settles only
            definite matches first), ``paper_grader_only`` (no checker pass), or
            ``checker`` (the rule checker decides; the judge, if set, only what it cannot
            compare; no box is a 0). Each record's ``judge`` field names the protocol.
        samples: k, samples per problem (avg@k, pass@k).
        mode: ``single`` (one turn), ``rc`` (test-time reasoning cache, ``rc_iterations``
            turns), ``scaffold`` (the ``scaffold`` given), or a scaffold's name (``rsa``,
            ``dsm``, ``nomos``, ``selfcheck``, ``best_of_n``: at its reference settings).
            Every mode but ``single`` writes under ``<model_label>+<mode>`` (its own
            generations, records and report row).
        scaffold: A test-time scaffold (``qed_lightning.scaffolds``), e.g. from
            ``configs/eval/scaffolds/rsa.yaml``; its calls use the policy's sampling.
        summarizer: RC's summarizer; None: the policy summarizes itself.
        prompt_template: The user turn around ``{problem}``; None: the benchmark's
            (the recipe's proof prompt, or the boxed-answer prompt).
        answer_mode: ``after_think`` (thinking models) or ``whole``.
        model_label: The report's row name for this model.
        output_dir: Where results go.
        chunk_size: Problems per generation/grading chunk (the unit of resume).
        progress: Progress bars for generation and grading.
        shard: (index, count): evaluate every count-th problem from index (one rank's
            share under DDP; the evaluation callback sets it).
        failed_gradings: How failed gradings count: ``zero`` (the released code's rule,
            default) or ``leave_out`` (``metrics.FAILED_GRADINGS``); the report shows both.
    """
    scaffold = _scaffold_of(mode, scaffold)
    if scaffold is not None:
        mode = scaffold.name
    elif mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    spec = BENCHMARKS[benchmark] if benchmark in BENCHMARKS else None
    if benchmark == "fineproofs_rl_test":  # a third-party dataset card says its problems are also in FineProofs-RL
        log.warning("fineproofs_rl_test: a third-party dataset card says its 128 problems also appear in "
                    "lm-provers/FineProofs-RL; the score is held-out only if the policy's training data was "
                    "decontaminated against it (qed data decontaminate --against with fineproofs_rl_test)")
    kind = spec.kind if spec is not None else "proof"
    if kind == "proof" and judge is None:
        raise ValueError(f"benchmark {benchmark!r} grades proofs: set a judge (an LLMJudge with its prompt)")
    if kind == "answer":
        if answer_protocol not in ANSWER_PROTOCOLS:
            raise ValueError(f"answer_protocol must be one of {sorted(ANSWER_PROTOCOLS)}, got {answer_protocol!r}")
        ANSWER_PROTOCOLS[answer_protocol].check(answer_protocol, judge)  # before hours of generation
    loaded = load_benchmark_with_report(benchmark, source=source, split=split, revision=revision,
                                        columns=columns, categories=categories, levels=levels, ids=ids, limit=limit,
                                        on_bad_row=on_bad_row, judge=judge if kind == "proof" else None)
    problems = loaded.problems[shard[0]::shard[1]]
    template = prompt_template or (ANSWER_PROMPT if kind == "answer" else PROOF_PROMPT)
    if mode != "single":  # another mode's samples are other samples: never mixed with single-turn ones
        model_label = f"{model_label}+{mode}"
    store = EvalStore(Path(output_dir) / benchmark / model_label)
    if scaffold is not None:
        _generate_scaffold(policy, problems, store, samples, scaffold, template, answer_mode, chunk_size, progress)
    else:
        _generate(policy, problems, store, samples, mode, rc_iterations, summarizer, template, chunk_size, progress)
    _grade(problems, store, kind, judge, benchmark, model_label, answer_mode, chunk_size, progress, answer_protocol)
    records = [store.records[(p.id, j)] for p in problems for j in range(samples) if (p.id, j) in store.records]
    # an earlier judge's verdicts of these items are reported apart, never mixed in
    earlier = store.other_judges([(p.id, j) for p in problems for j in range(samples)])
    paths = write_report(records + earlier, store.directory, samples, summarize_records, {benchmark: kind},
                         failed_gradings, skipped_rows=loaded.skipped_by_reason)
    summary = summarize_records(records, samples, failed_gradings)
    summary["report"] = str(paths.markdown)
    summary["comparison"] = str(write_comparison(Path(output_dir) / benchmark, samples, failed_gradings))
    summary["skipped_rows"] = len(loaded.skipped)
    summary["skipped_by_reason"] = dict(loaded.skipped_by_reason)
    if kind == "answer":
        summary["answer_protocol"] = answer_protocol
    if shard == (0, 1) and records:  # an evaluated qed export gets these numbers on its model card
        shown = benchmark if mode == "single" else f"{benchmark} ({mode})"  # scaffold and RC runs: their own entry
        record_export_eval(getattr(policy, "model", None), shown, summary, records[0].judge, samples)
    log.info("%s on %s: report at %s", model_label, benchmark, paths.markdown)
    return summary


def _message(template: str, problem: Problem) -> str:
    return template.replace("{problem}", problem.statement)


def _generate(policy, problems, store, samples, mode, rc_iterations, summarizer, template, chunk_size, progress):
    for j in range(samples):
        todo = [p for p in problems if (p.id, j) not in store.generations or store.generations[(p.id, j)].get("error")]
        chunks = list(_chunks(todo, chunk_size))
        for chunk in _progress(chunks, len(chunks), f"generating sample {j + 1}/{samples}", progress):
            if mode == "single":
                outs = policy.generator("reason", j)([_message(template, p) for p in chunk])
                rows = [dict(problem_id=p.id, sample=j, text=o.text, tokens=o.num_tokens,
                             finish_reason="length" if o.truncated else "stop", turns=1, error=o.error)
                        for p, o in zip(chunk, outs)]
            else:
                rows = _rc_rows(policy, chunk, j, rc_iterations, summarizer, template)
            store.add_generations(rows)


def _scaffold_of(mode: str, scaffold: Scaffold | None) -> Scaffold | None:
    if scaffold is not None:
        if mode not in ("scaffold", scaffold.name):
            raise ValueError(f"mode={mode!r} with a scaffold ({scaffold.name}) set: use mode=scaffold (or "
                             f"mode={scaffold.name}), or drop the scaffold")
        return scaffold
    if mode == "scaffold":
        raise ValueError("mode=scaffold needs a scaffold (e.g. --config configs/eval/scaffolds/rsa.yaml)")
    if mode in MODES:
        return None
    from qed_lightning.scaffolds import build_scaffold, scaffold_names

    if mode not in scaffold_names():
        raise ValueError(f"mode must be one of {MODES} or a scaffold ({', '.join(scaffold_names())}), got {mode!r}")
    return build_scaffold(mode)


def _generate_scaffold(policy, problems, store, samples, scaffold, template, answer_mode, chunk_size, progress):
    """Each chunk's problems go through the scaffold together (one batched generation
    per stage); every call is kept in ``scaffold_calls.jsonl``, so a rerun replays
    finished stages and generates only the rest."""
    from qed_lightning.scaffolds.call_store import CallStore
    from qed_lightning.scaffolds.run import scaffold_rows

    calls = CallStore(store.directory / "scaffold_calls.jsonl", scaffold.name)
    generate = policy.chat(answer_mode)
    for j in range(samples):
        todo = [p for p in problems if (p.id, j) not in store.generations or store.generations[(p.id, j)].get("error")]
        chunks = list(_chunks(todo, chunk_size))
        for chunk in _progress(chunks, len(chunks), f"{scaffold.name} sample {j + 1}/{samples}", progress):
            framed = [_message(template, p) for p in chunk]
            store.add_generations(scaffold_rows(scaffold, chunk, framed, j, policy.seed, answer_mode, generate, calls))


def _rc_rows(policy, chunk, j, iterations, summarizer, template):
    from qed_lightning.reasoning_cache.prompts import RCPrompts

    summarize = (policy.generator("summary", j) if summarizer is None
                 else client_generator(summarizer, policy.count_tokens))
    # The benchmark's instruction frames the problem in every RC turn.
    framed = [Problem(p.id, _message(template, p), p.rubric, p.reference_solution, p.metadata) for p in chunk]
    trajectories, _ = run_cycles(framed, policy.generator("reason", j), summarize, iterations - 1, reason_final=True,
                                 prompts=RCPrompts(), count_tokens=policy.count_tokens,
                                 max_prompt_tokens=policy.max_prompt_tokens())
    rows = []
    for t in trajectories:
        last = t.reasoning[-1] if t.reasoning else None
        rows.append(dict(problem_id=t.problem.id, sample=j, text=last.text if last else "", tokens=t.total_tokens,
                         finish_reason="length" if last is not None and last.truncated else "stop",
                         turns=len(t.reasoning), calls=len(t.reasoning) + len(t.summary_outputs),
                         summaries=t.summaries,
                         error=None if last is not None else "too_long: the first RC prompt does not fit"))
    return rows


def _grade(problems, store, kind, judge, benchmark, model_label, answer_mode, chunk_size, progress,
           answer_protocol="checker"):
    by_id = {p.id: p for p in problems}
    label, grade = _grader(kind, judge, answer_protocol)
    store.select_judge(label)  # items graded by another judge are graded again, not mixed in
    todo = [g for key, g in store.generations.items() if key[0] in by_id
            and (key not in store.records or not store.records[key].graded)]
    chunks = list(_chunks(todo, chunk_size))
    for chunk in _progress(chunks, len(chunks), "grading", progress):
        scored = grade(chunk, by_id, judge, answer_mode)
        store.add_records([
            EvalRecord(benchmark, model_label, g["problem_id"], int(g["sample"]), g["text"], answer, int(g["tokens"]),
                       g["finish_reason"], score, error, _meta(by_id[g["problem_id"]], "category"),
                       _meta(by_id[g["problem_id"]], "level"), label, origin, int(g.get("calls", g.get("turns", 1))))
            for g, (answer, score, error, origin) in zip(chunk, scored)])


def _grader(kind: str, judge: BaseJudge | None, answer_protocol: str):
    """The records' ``judge`` label and the chunk grading function of this benchmark kind."""
    if kind == "proof":
        return judge_label(judge), _grade_proofs
    protocol = ANSWER_PROTOCOLS[answer_protocol]
    grader = judge_label(judge) if protocol.needs_judge else (
        "answer checker" + (f" + {judge_label(judge)}" if judge else ""))
    return f"{grader}, {protocol.label}", protocol.grade


def _meta(problem: Problem, key: str) -> str | None:
    value = problem.metadata.get(key)
    return None if value is None else str(value)


def _grade_proofs(chunk, by_id, judge, answer_mode) -> list[tuple[str, int | None, str | None, str]]:
    failed = {i: g["error"] for i, g in enumerate(chunk) if g.get("error")}
    items = [GradingItem(by_id[g["problem_id"]], g["text"]) for i, g in enumerate(chunk) if i not in failed]
    verdicts = iter(judge.grade(items) if items else [])
    out = []
    for i, g in enumerate(chunk):
        answer = extract_answer(g["text"], mode=answer_mode).text
        if i in failed:  # no text came back: a counted failure, not a 0
            out.append((answer, None, f"generation: {failed[i]}", "generation"))
            continue
        v = next(verdicts)
        out.append((answer, v.score, v.error, v.origin))
    return out
