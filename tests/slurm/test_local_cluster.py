"""The local SLURM harness itself: multi-task steps, and a USR1 -> requeue -> rerun cycle."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _wait_for_text(path: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.1)
    raise TimeoutError(f"{needle!r} not in {path} after {timeout}s: {path.read_text() if path.exists() else '<missing>'!r}")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two tasks on one node need two CPUs")
def test_two_task_job_sees_both_ranks(slurm_cluster, tmp_path):
    out = tmp_path / "ranks.out"
    script = _write(
        tmp_path / "ranks.sbatch",
        """#!/bin/bash
#SBATCH --job-name=harness-ranks
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --requeue
srun bash -c 'echo "procid=$SLURM_PROCID localid=$SLURM_LOCALID ntasks=$SLURM_NTASKS"'
""",
    )
    job_id = slurm_cluster.submit(script, extra_args=["--output", str(out), "--chdir", str(tmp_path)])
    info = slurm_cluster.wait_for(job_id, {"COMPLETED"}, timeout=30)

    assert info["ExitCode"] == "0:0"
    lines = sorted(re.findall(r"procid=\S* localid=\S* ntasks=\S*", out.read_text()))
    assert lines == ["procid=0 localid=0 ntasks=2", "procid=1 localid=1 ntasks=2"], out.read_text()


def test_usr1_requeue_restarts_the_job(slurm_cluster, tmp_path):
    out = tmp_path / "requeue.out"
    # The step (not the batch shell) gets `scancel -s USR1`, as Lightning's ranks do; on
    # the first run it requeues its own job from the handler, like Lightning's auto-requeue.
    _write(
        tmp_path / "step.sh",
        """#!/bin/bash
restarts=${SLURM_RESTART_COUNT:-0}
if [ "$restarts" = 0 ]; then
  on_usr1() {
    echo "USR1 in run 0, requeueing $SLURM_JOB_ID"
    kill "$sleeper" 2>/dev/null
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  }
  trap on_usr1 USR1
  # The signal goes to every process of the step: a plain `sleep` child would die of it
  # and could end the wait before this shell's trap runs, so the sleeper ignores USR1.
  ( trap '' USR1; exec sleep 120 ) & sleeper=$!
  echo "run 0 waiting"
  wait "$sleeper"
  echo "run 0 was not signalled"
  exit 3
fi
echo "restarted $restarts"
exit 0
""",
    )
    script = _write(
        tmp_path / "requeue.sbatch",
        f"""#!/bin/bash
#SBATCH --job-name=harness-requeue
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --requeue
srun bash {tmp_path / "step.sh"}
""",
    )
    job_id = slurm_cluster.submit(script, extra_args=["--output", str(out), "--chdir", str(tmp_path)])
    slurm_cluster.wait_for(job_id, {"RUNNING"}, timeout=20)
    _wait_for_text(out, "run 0 waiting", timeout=20)  # the trap is set

    signalled = time.monotonic()
    slurm_cluster.signal(job_id, "USR1")
    info = slurm_cluster.wait_for(job_id, {"COMPLETED"}, timeout=40)
    print(f"USR1 -> requeued job completed in {time.monotonic() - signalled:.1f}s")

    text = out.read_text()
    assert "USR1 in run 0, requeueing" in text, text
    assert "restarted 1" in text, text
    assert text.index("run 0 waiting") < text.index("restarted 1"), text
    assert "was not signalled" not in text, text
    assert info["Restarts"] == "1", info
    assert info["ExitCode"] == "0:0", info
