"""`qed fit` in a subprocess, as a user launches it (Lightning starts the other ranks)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch
from launcher_env import launcher_free_environ

ROOT = Path(__file__).resolve().parents[2]


# FSDP2 through Lightning's ModelParallelStrategy, saving one full checkpoint file
FSDP2 = ["--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
         "--trainer.strategy.data_parallel_size=2", "--trainer.strategy.tensor_parallel_size=1",
         "--trainer.strategy.save_distributed_checkpoint=false"]
# Lightning's FSDPStrategy (FSDP1) as the SFT config used to select it, on CPU (see cpu_fsdp.py)
FSDP1 = ["--trainer.strategy=tests.distributed.cpu_fsdp.CPUFSDPStrategy",
         "--trainer.strategy.sharding_strategy=FULL_SHARD", "--trainer.strategy.state_dict_type=full"]
STRATEGIES = {"ddp": ["--trainer.strategy=ddp"], "fsdp2": FSDP2, "fsdp1": FSDP1}


def qed_fit(args: list[str], root: Path, devices: int, strategy: str = "ddp", timeout: int = 900,
            check: bool = True, export: bool = False) -> subprocess.CompletedProcess:
    """``check``: assert that the run succeeded (else the caller reads the result);
    ``export``: write the Hugging Face export at the end (``<run>/hf_export``)."""
    chosen = ["--trainer.strategy=auto"] if devices == 1 else STRATEGIES[strategy]
    cmd = [sys.executable, "-m", "qed_lightning", "fit", *args, f"--trainer.devices={devices}",
           *chosen, f"--trainer.default_root_dir={root}",
           f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
           f"--export.enabled={str(export).lower()}"]
    env = launcher_free_environ(PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert not check or proc.returncode == 0, proc.stderr[-4000:]
    return proc


def run_dir(root: Path) -> Path:
    return next(root.glob("*/run"))


def final_weights(root: Path, prefix: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir(root) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def step_metrics(root: Path, key: str = "train/loss") -> list[dict]:
    with (run_dir(root) / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f) if r.get(key)]
