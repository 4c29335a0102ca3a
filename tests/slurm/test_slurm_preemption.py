"""The SFT template, adapted to CPU, on a real one-node SLURM cluster: 2 tasks under
srun (DDP over gloo). One job runs uninterrupted; another gets `scancel -s USR1`
mid-run, saves at the next step boundary, requeues itself (SLURM_RESTART_COUNT=1),
resumes from its own last.ckpt in the same log directory, and ends with the same
weights, bit for bit."""
from __future__ import annotations

import csv
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two tasks on one node need two CPUs")]

ROOT = Path(__file__).resolve().parents[2]


def cpu_template(tmp_path: Path) -> Path:
    """slurm/sft.sbatch with the GPU requests removed and two tasks per node; the
    signal is sent by the test instead of --signal (which may fire up to 60 s early)."""
    dropped = ("#SBATCH --gpus-per-node", "#SBATCH --cpus-per-task", "#SBATCH --signal", "#SBATCH --time",
               "#SBATCH --output")
    lines = [line.replace("#SBATCH --ntasks-per-node=8", "#SBATCH --ntasks-per-node=2")
             for line in (ROOT / "slurm" / "sft.sbatch").read_text().splitlines() if not line.startswith(dropped)]
    assert {"#SBATCH --ntasks-per-node=2", "#SBATCH --requeue", "#SBATCH --open-mode=append"} <= set(lines)
    path = tmp_path / "sft_cpu.sbatch"
    path.write_text("\n".join(lines) + "\n")
    return path


def submit(cluster, script: Path, root: Path, model_dir: Path) -> int:
    root.mkdir()
    env = {"QED_HOME": str(ROOT), "QED": f"{sys.executable} -m qed_lightning", "QED_ACCELERATOR": "cpu",
           "CONFIG": str(ROOT / "configs/demo/sft.yaml")}
    fit_args = [  # the batch script's arguments go to `qed fit`
        f"--model.model={model_dir}", f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.default_root_dir={root}", "--trainer.strategy=ddp", "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0", "--data.val_fraction=0",
        "--data.samples_per_step=4", "--model.lr=1e-3", "--checkpoint.every_n_train_steps=100",
        "--export.enabled=false",
        '--trainer.callbacks+={"class_path": "qed_lightning.testing.interruptions.SleepEachStep", "init_args": {"seconds": 0.5}}',
    ]
    return cluster.submit(script, env=env, extra_args=["--output", str(root / "job.out"), "--chdir", str(root)],
                          script_args=fit_args)


def run_dir(root: Path, job: int) -> Path:
    return root / "demo-sft" / f"slurm_{job}"  # the logger version is pinned to the job


def logged_steps(root: Path, job: int) -> list[int]:
    path = run_dir(root, job) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def weights(root: Path, job: int) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir(root, job) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["global_step"]


def test_usr1_saves_at_a_step_boundary_requeues_and_resumes_to_the_same_weights(slurm_cluster, tmp_path,
                                                                               tiny_model_dir):
    script = cpu_template(tmp_path)
    whole_job = submit(slurm_cluster, script, tmp_path / "whole", tiny_model_dir)
    slurm_cluster.wait_for(whole_job, {"COMPLETED"}, timeout=300)
    want, steps = weights(tmp_path / "whole", whole_job)
    assert steps >= 8 and logged_steps(tmp_path / "whole", whole_job) == list(range(steps))

    root = tmp_path / "preempted"
    job = submit(slurm_cluster, script, root, tiny_model_dir)
    deadline = time.monotonic() + 300
    while len(logged_steps(root, job)) < 2:  # mid-run: two steps done
        assert time.monotonic() < deadline, (root / "job.out").read_text()
        assert slurm_cluster.job(job).get("JobState") in ("PENDING", "RUNNING"), (root / "job.out").read_text()
        time.sleep(0.2)
    slurm_cluster.signal(job, "USR1")
    info = slurm_cluster.wait_for(job, {"COMPLETED"}, timeout=300)

    out = (root / "job.out").read_text()
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0", out
    assert "restart 0: qed fit" in out and "restart 1: qed fit" in out, out  # one output file, appended
    saved = [line for line in out.splitlines() if "preemption (SIGUSR1): saved" in line]
    assert len(saved) == 1 and "at the step boundary of step" in saved[0], out
    saved_step = int(re.search(r"at the step boundary of step (\d+) ", saved[0]).group(1))
    assert 2 <= saved_step < steps
    got, got_steps = weights(root, job)
    assert got_steps == steps
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"{len(different)} tensors differ after the requeue, e.g. {different[:3]}"
    assert logged_steps(root, job) == list(range(steps))  # every step logged once, in one metrics.csv
    assert not list(root.rglob("hpc_ckpt_*.ckpt"))  # Lightning's own in-handler save never ran
