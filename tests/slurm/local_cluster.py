"""A real one-node SLURM cluster on localhost, for tests.

Runs Debian's ``slurm-wlm`` (22.05) and ``munge`` as root, without systemd: ``munged``
as the munge user (unless one is already running), then ``slurmctld`` and ``slurmd``
with a ``slurm.conf`` written into a temporary folder (nothing under ``/etc/slurm`` is
read or written). Clients find the cluster through ``SLURM_CONF`` (see ``env()``).

The daemons run in the foreground as children of this process, so ``stop()`` ends
exactly the processes that ``start()`` launched (their pids are also the ones in the
daemons' pid files) and reaps them. Slurm's ports (6817/6818) are fixed, so only one
such cluster can run on a machine at a time.

The scheduler and credential settings make a requeued job run again within about ten
seconds instead of about two and a half minutes with Slurm's defaults. Memory is a
consumable resource, as on most production clusters (``REAL_MEMORY_MB`` for the node, a
per-CPU default for jobs that ask for none), so two job steps that each want all of a
job's memory cannot run side by side; nothing enforces the amounts (no cgroups).
"""
from __future__ import annotations

import os
import re
import shutil
import signal as _signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REQUIRED_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "sinfo", "munged", "munge", "unmunge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")
REAL_MEMORY_MB = 1000  # the node's memory as the scheduler sees it (not above the machine's)
SLURMCTLD_PORT = 6817
SLURMD_PORT = 6818
# Job states after which a job does not run again by itself.
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
)

_CMD_TIMEOUT = 30.0
# `scontrol show job -o` prints `Key=value` pairs separated by single spaces; values may
# themselves hold `=` (TRES=cpu=2,node=1) but a key always follows a space.
_PAIR = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_:/]*=|\s*$)")


def _which(name: str) -> str | None:
    # The daemons live in /usr/sbin, which is not always on a PATH.
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/bin:/sbin:/bin"
    return shutil.which(name, path=path)


def cluster_unavailable_reason() -> str | None:
    """``None`` when a local cluster can be started here, else why not (a skip reason)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a local SLURM cluster needs root (to run munged, slurmctld and slurmd)"
    missing = [name for name in REQUIRED_BINARIES if _which(name) is None]
    if missing:
        return (
            f"SLURM/munge binaries not found: {', '.join(missing)} "
            "(install the Debian packages slurm-wlm and munge)"
        )
    return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc.strerror}>"
    return "\n".join(text.splitlines()[-lines:])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _clean_environ() -> dict[str, str]:
    """The current environment without SLURM_* (e.g. when the suite itself runs in a job)
    and without distributed-launch variables (see ``launcher_env``): sbatch exports the
    submitter's environment into the job."""
    from launcher_env import launcher_free_environ

    return launcher_free_environ()


class LocalSlurmCluster:
    """A one-node cluster: ``start()``, submit/inspect/signal jobs, ``stop()``."""

    def __init__(self, base_dir: Path | None = None, *, start_timeout: float = 30.0) -> None:
        self._requested_base = Path(base_dir) if base_dir is not None else None
        self.start_timeout = start_timeout
        self.base: Path | None = None
        self.hostname = socket.gethostname().split(".")[0]
        self._procs: dict[str, subprocess.Popen] = {}
        self._started_munged = False
        self._own_base = False
        self._jobs: list[int] = []

    # ----------------------------------------------------------------- paths
    @property
    def conf_path(self) -> Path:
        return self._need_base() / "slurm.conf"

    def log_path(self, daemon: str) -> Path:
        return self._need_base() / "log" / f"{daemon}.log"

    def _need_base(self) -> Path:
        if self.base is None:
            raise RuntimeError("the cluster is not started")
        return self.base

    # ------------------------------------------------------------- lifecycle
    def start(self) -> "LocalSlurmCluster":
        reason = cluster_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        for port, daemon in ((SLURMCTLD_PORT, "slurmctld"), (SLURMD_PORT, "slurmd")):
            if _port_in_use(port):
                raise RuntimeError(
                    f"port {port} is in use (another {daemon} running?): only one local cluster per machine"
                )
        if self._requested_base is None:
            self.base = Path(tempfile.mkdtemp(prefix="slurm-local-"))
            self._own_base = True
        else:
            self.base = self._requested_base
            self.base.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool", "log", "run"):
            (self.base / sub).mkdir(exist_ok=True)
        try:
            self._start_munged()
            self._write_conf()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
            self._spawn("slurmd", [_which("slurmd"), "-D"])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel our jobs, then end the daemons this object started (and only those)."""
        if self._procs.get("slurmctld") is not None and self._procs["slurmctld"].poll() is None:
            self._cancel_own_jobs()
        # slurmd first, so it does not keep retrying a controller that is gone.
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                self._terminate(proc)
        self._started_munged = False
        if self._own_base and self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
            self._own_base = False

    def __enter__(self) -> "LocalSlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """What a client (sbatch, srun, scontrol, ...) needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf_path)}

    # ------------------------------------------------------------------ jobs
    def submit(self, script: Path, *, env: dict | None = None, extra_args: list[str] | tuple = (),
               script_args: list[str] | tuple = ()) -> int:
        """``sbatch --parsable [extra_args] script [script_args]`` (the job inherits this
        environment plus ``env``; ``script_args`` are the batch script's own arguments)."""
        job_env = {**_clean_environ(), **self.env(), **(env or {})}
        argv = ["sbatch", "--parsable", *extra_args, str(script), *script_args]
        out = self._run(argv, env=job_env).stdout.strip()
        job_id = int(out.split(";")[0])
        self._jobs.append(job_id)
        return job_id

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, StdOut, ...)."""
        out = self._run(["scontrol", "show", "job", "-o", str(job_id)]).stdout.strip()
        return {m.group(1): m.group(2) for m in _PAIR.finditer(out.splitlines()[0] if out else "")}

    def wait_for(self, job_id: int, states: set[str], timeout: float, *, poll: float = 0.2) -> dict[str, str]:
        """Poll until the job's state is one of ``states``; return its ``job()`` dict.

        Raises ``TimeoutError`` (with the job and the logs) after ``timeout`` seconds, and
        ``RuntimeError`` at once if the job ends in a final state that is not wanted.
        """
        wanted = {s.upper() for s in states}
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while True:
            info = self.job(job_id)
            state = info.get("JobState", "")
            if state in wanted:
                return info
            if state in TERMINAL_STATES:
                raise RuntimeError(f"job {job_id} ended {state}, waiting for {sorted(wanted)}\n{self._report(info)}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {state or '?'} after {timeout:.0f}s, waiting for {sorted(wanted)}\n"
                    f"{self._report(info)}"
                )
            time.sleep(poll)

    def signal(self, job_id: int, sig: str = "USR1", *, batch_shell: bool = False) -> None:
        """``scancel -s SIG``: reaches every task of the job's steps (srun), and with
        ``batch_shell=True`` (``--full``) also the batch script itself."""
        self._run(["scancel", "-s", sig, *(["--full"] if batch_shell else []), str(job_id)])

    def cancel(self, job_id: int) -> None:
        self._run(["scancel", str(job_id)])

    # ------------------------------------------------------------- internals
    def _run(self, argv: list[str], *, env: dict | None = None, timeout: float = _CMD_TIMEOUT, check: bool = True):
        argv = [_which(argv[0]) or argv[0], *argv[1:]]
        run_env = env if env is not None else {**_clean_environ(), **self.env()}
        proc = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout.strip()}\n"
                f"stderr: {proc.stderr.strip()}\n{self._daemon_logs()}"
            )
        return proc

    def _munge_works(self) -> bool:
        try:
            cred = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=10)
            if cred.returncode != 0:
                return False
            check = subprocess.run([_which("unmunge")], input=cred.stdout, capture_output=True, timeout=10)
            return check.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munged(self) -> None:
        if self._munge_works():
            return  # someone else's munged: use it, never stop it
        if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size == 0:
            subprocess.run(
                [_which("mungekey"), "--create", f"--keyfile={MUNGE_KEY}"], check=True, capture_output=True, timeout=30
            )
            shutil.chown(MUNGE_KEY, "munge", "munge")
            MUNGE_KEY.chmod(0o400)
        MUNGE_RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
        MUNGE_RUN_DIR.chmod(0o755)
        # As the munge user (as root munged rejects its log folder as insecure); in the
        # foreground so that the pid we hold is munged's. --force clears a stale socket
        # left by a munged that died (we checked above that none answers).
        self._spawn("munged", [_which("munged"), "-F", "--force"], user="munge", group="munge")
        self._started_munged = True
        deadline = time.monotonic() + 10
        while not self._munge_works():
            if self._procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not come up\n{self._daemon_logs()}")
            time.sleep(0.1)

    def _spawn(self, name: str, argv: list[str], **kwargs) -> None:
        out = open(self._need_base() / "log" / f"{name}.out", "ab")
        env = {**_clean_environ(), **(self.env() if name != "munged" else {})}
        try:
            self._procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, **kwargs,
            )
        finally:
            out.close()

    @staticmethod
    def _terminate(proc: subprocess.Popen, timeout: float = 15.0) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(_signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _cancel_own_jobs(self) -> None:
        if not self._jobs:
            return
        ids = [str(j) for j in self._jobs]
        try:
            self._run(["scancel", *ids], check=False, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                q = self._run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], check=False, timeout=10)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._jobs.clear()

    def _write_conf(self) -> None:
        b = self._need_base()
        h = self.hostname
        conf = f"""\
ClusterName=local
SlurmctldHost={h}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU={REAL_MEMORY_MB // (os.cpu_count() or 1)}
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
MpiDefault=none
JobRequeue=1
ReturnToService=2
NodeName={h} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={REAL_MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        self.conf_path.write_text(conf)

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                if self._procs[name].poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {self._procs[name].returncode} during start\n{self._daemon_logs()}"
                    )
            proc = self._run(["sinfo", "-h", "-o", "%T"], check=False, timeout=10)
            last = (proc.stdout + proc.stderr).strip()
            if proc.returncode == 0 and last == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"the SLURM node was not idle after {self.start_timeout:.0f}s (sinfo: {last!r})\n{self._daemon_logs()}"
        )

    def _daemon_logs(self, lines: int = 20) -> str:
        if self.base is None:
            return ""
        parts = []
        for name in ("slurmctld", "slurmd"):
            parts.append(f"--- {name}.log (tail) ---\n{_tail(self.log_path(name), lines)}")
            out = self.base / "log" / f"{name}.out"
            if out.exists() and out.stat().st_size:
                parts.append(f"--- {name} stdout/stderr (tail) ---\n{_tail(out, lines)}")
        if self._started_munged:
            parts.append(f"--- munged stdout/stderr (tail) ---\n{_tail(self.base / 'log' / 'munged.out', lines)}")
        return "\n".join(parts)

    def _report(self, info: dict[str, str]) -> str:
        parts = [f"job: {info}"]
        for key in ("StdOut", "StdErr"):
            path = info.get(key)
            if path and (key == "StdOut" or path != info.get("StdOut")):
                parts.append(f"--- job {key} (tail) ---\n{_tail(Path(path))}")
        parts.append(self._daemon_logs())
        return "\n".join(parts)
