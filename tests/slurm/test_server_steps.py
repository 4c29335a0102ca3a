"""Server job steps (the grader, RC's summarizer) each get an explicit share of the job's
memory on their node, so two of them start side by side where the cluster tracks memory.

The first tests run the real templates with stand-ins for srun, scontrol and curl (no
cluster needed): every `vllm serve` step must carry --mem, and the shares of one node must
fit in the job's memory there. The last one runs rc.sbatch's two server steps on the real
one-node cluster, with a stand-in `vllm` that answers /health.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "slurm").glob("*.sbatch"))
SERVER_TEMPLATES = [t for t in TEMPLATES if "start_server" in t.read_text()]

SRUN = """#!/bin/bash
# records each call's arguments, one per line, a blank line after each call
printf '%s\\n' "$@" >> "$SRUN_LOG"; echo >> "$SRUN_LOG"
"""
SCONTROL = """#!/bin/bash
case "$1 $2" in
  "show hostnames") tr ',' '\\n' <<< "$3" ;;
  "show node") echo "NodeName=$3 CPUs=96 RealMemory=$NODE_REAL_MB State=IDLE" ;;
  *) exit 1 ;;
esac
"""
CURL = "#!/bin/bash\nexit 0\n"


def _stubs(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL), ("curl", CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_with_stubs(template: Path, tmp_path: Path, **env: str) -> list[list[str]]:
    """Runs ``template`` as a 3-node job of 8 tasks x 12 CPUs per node; the srun calls' argv."""
    log = tmp_path / "srun.log"
    base = {"PATH": f"{_stubs(tmp_path)}:/usr/bin:/bin", "QED_HOME": str(ROOT), "SRUN_LOG": str(log),
            "SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n1,n2,n3", "SLURM_NTASKS_PER_NODE": "8",
            "SLURM_CPUS_PER_TASK": "12", "SLURM_JOB_CPUS_PER_NODE": "96(x3)", "NODE_REAL_MB": "2000000"}
    result = subprocess.run(["bash", str(template)], env={**base, **env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().split("\n\n")
    return [c.splitlines() for c in calls if c.strip()]


def _server_steps(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if "vllm" in c and "serve" in c]


def _mem_mb(call: list[str]) -> int | None:
    found = [re.fullmatch(r"--mem=(\d+)M", a) for a in call]
    found = [int(m.group(1)) for m in found if m]
    return found[0] if len(found) == 1 else None


def test_the_templates_that_start_servers_are_found():
    assert {t.name for t in SERVER_TEMPLATES} == {"rl.sbatch", "rc.sbatch"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("template", SERVER_TEMPLATES, ids=lambda t: t.name)
@pytest.mark.parametrize("memory, job_mb", [
    ({"SLURM_MEM_PER_NODE": "1600000"}, 1600000),  # --mem=1600000
    ({"SLURM_MEM_PER_CPU": "10000"}, 960000),  # --mem-per-cpu: 96 CPUs x 10000 MB on the node
    ({"SLURM_MEM_PER_NODE": "0"}, 2000000),  # --mem=0: the node's RealMemory
], ids=["per-node", "per-cpu", "whole-node"])
def test_every_server_step_has_a_memory_share_that_fits_the_node(template, memory, job_mb, tmp_path):
    calls = run_with_stubs(template, tmp_path, **memory)
    servers = _server_steps(calls)
    assert servers and len(calls) == len(servers) + 1  # the servers and one trainer step
    per_node: dict[str, int] = {}
    for call in servers:
        mb = _mem_mb(call)
        assert mb is not None and mb > 0, f"a server step without its memory share: {call}"
        assert "--exact" in call
        node = next(a.split("=", 1)[1] for a in call if a.startswith("--nodelist="))
        per_node[node] = per_node.get(node, 0) + mb
    assert per_node == {"n1": job_mb}  # the server node's memory, split exactly among its servers


def test_rc_splits_the_server_node_seven_to_one(tmp_path):
    servers = _server_steps(run_with_stubs(ROOT / "slurm" / "rc.sbatch", tmp_path, SLURM_MEM_PER_NODE="800000"))
    by_model = {c[c.index("serve") + 1]: _mem_mb(c) for c in servers}
    assert by_model == {"openai/gpt-oss-20b": 700000, "Qwen/Qwen3-4B-Instruct-2507": 100000}


def test_a_bad_share_or_no_memory_is_a_clear_error(tmp_path):
    (tmp_path / "bad.sbatch").write_text(
        f'source "{ROOT}/slurm/common.sh"\nstart_server n1 8000 1 7 m\n')
    result = subprocess.run(["bash", str(tmp_path / "bad.sbatch")], capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{_stubs(tmp_path)}:/usr/bin:/bin", "SRUN_LOG": str(tmp_path / "log"),
                                 "QED_HOME": str(ROOT), "SLURM_JOB_NODELIST": "n1", "NODE_REAL_MB": ""})
    assert result.returncode != 0 and "memory share must look like 7/8, got '7'" in result.stderr
    (tmp_path / "bad.sbatch").write_text(f'source "{ROOT}/slurm/common.sh"\nstart_server n1 8000 1 7/8 m\n')
    result = subprocess.run(["bash", str(tmp_path / "bad.sbatch")], capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SRUN_LOG": str(tmp_path / "log"),
                                 "QED_HOME": str(ROOT), "SLURM_JOB_NODELIST": "n1", "NODE_REAL_MB": ""})
    assert result.returncode != 0 and "no memory for a 7/8 share on n1 (set SERVER_NODE_MEM_MB)" in result.stderr
    assert not (tmp_path / "log").exists()  # no step was started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAKE_VLLM = """#!/bin/bash
# stands in for `vllm serve MODEL --port P ...`: answers GET /health on P
port=
while [ $# -gt 0 ]; do case $1 in --port) port=$2; shift 2 ;; *) shift ;; esac; done
dir=$(mktemp -d); touch "$dir/health"
exec python3 -m http.server "$port" --bind 0.0.0.0 --directory "$dir"
"""


def rc_server_lines() -> str:
    """rc.sbatch's two start_server commands, verbatim (with their continuation lines)."""
    lines = (ROOT / "slurm" / "rc.sbatch").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("start_server "))
    last = next(i for i, line in enumerate(lines) if line.startswith("summarizer_url=$SERVER_URL"))
    block = lines[first:last + 1]
    assert sum(line.startswith("start_server ") for line in block) == 2, block
    return "\n".join(block)


@pytest.mark.slurm
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two server steps of one CPU each need two CPUs")
@pytest.mark.skipif(shutil.which("python3") is None, reason="the stand-in server needs python3")
def test_rc_server_steps_start_side_by_side_on_a_cluster_that_tracks_memory(slurm_cluster, tmp_path):
    from .local_cluster import REAL_MEMORY_MB

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(FAKE_VLLM)
    (bin_dir / "vllm").chmod(0o755)
    ports = _free_port(), _free_port()
    lines = rc_server_lines().replace(" 8000 ", f" {ports[0]} ").replace(" 8001 ", f" {ports[1]} ")
    script = tmp_path / "servers.sbatch"
    script.write_text(f"""#!/bin/bash
source "$QED_HOME/slurm/common.sh"
hosts=("$(hostname -s)")
{lines}
echo "both up: $judge_url $summarizer_url"
kill "$judge_pid" "$summarizer_pid"
""")
    out = tmp_path / "job.out"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "QED_HOME": str(ROOT), "QED_ACCELERATOR": "cpu",
           "SERVER_CPUS": "1", "SERVER_START_TIMEOUT": "40"}
    # a per-node memory amount: a step without --mem would ask for all of it
    job = slurm_cluster.submit(script, env=env, extra_args=[
        "--output", str(out), "--chdir", str(tmp_path), "--nodes=1", "--ntasks=1", "--cpus-per-task=2",
        f"--mem={REAL_MEMORY_MB}"])
    info = slurm_cluster.wait_for(job, {"COMPLETED", "FAILED"}, timeout=180)
    text = out.read_text()
    assert info["JobState"] == "COMPLETED", text
    host = socket.gethostname().split(".")[0]
    assert f"both up: http://{host}:{ports[0]}/v1 http://{host}:{ports[1]}/v1" in text, text
    assert f"(7 GPU(s), {7 * REAL_MEMORY_MB // 8} MB)" in text and f"(1 GPU(s), {REAL_MEMORY_MB // 8} MB)" in text, text
