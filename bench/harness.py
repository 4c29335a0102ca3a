"""What every benchmark script shares: the machine's description and load, the
interleaved order of variants, a subprocess per variant, medians and ratios, and the
results writer. Standard library only: scripts import it before the project (and a
child may run under another interpreter, such as a separate TRL venv).

Scripts run as ``python bench/<name>.py``, so ``bench/`` is on ``sys.path`` and
``from harness import ...`` works.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MB = 1024 * 1024
# Prefix of a line a lockstep child prints to its parent (the rest of the line is JSON).
PROTOCOL = "@@qed-bench "

__all__ = ["MB", "PROTOCOL", "REPO", "RESULTS", "Meter", "StepChild", "busy_cpu_s", "command_line", "cpu_model",
           "dist_version", "fmt", "interleaved", "jsonable_args", "loadavg", "machine_info", "median",
           "median_seconds", "mem_available_gb", "mem_total_gb", "other_busy_processes", "others_share",
           "peak_rss_bytes", "pct", "proc_status_kb", "ratio", "ratio_summary", "run_child", "say", "settle",
           "table", "wait_for_quiet", "wait_go", "write_results"]


# --------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" when it has none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        return "?"


def _meminfo_gb(key: str, default: float) -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return default


def mem_available_gb(default: float = float("nan")) -> float:
    """MemAvailable in GiB (``default`` where /proc/meminfo cannot be read)."""
    return _meminfo_gb("MemAvailable", default)


def mem_total_gb(default: float = float("nan")) -> float:
    """MemTotal in GiB (``default`` where /proc/meminfo cannot be read)."""
    return _meminfo_gb("MemTotal", default)


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def dist_version(dist: str, missing: str = "not installed") -> str:
    """An installed distribution's version without importing it (``missing`` if absent)."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return missing


def machine_info(**extra) -> dict:
    """CPU model, core count, Python version and the date, then ``extra`` (library
    versions, memory, load: each script records what its numbers depend on)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **extra}


def command_line(script: str, argv: list[str] | None = None) -> str:
    """``python bench/<script>.py`` and its arguments (``argv``, or this process's)."""
    return " ".join([f"python bench/{script}.py", *(sys.argv[1:] if argv is None else argv)])


def jsonable_args(args) -> dict:
    """An argparse namespace as a JSON-ready dict (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


# ------------------------------------------------------------------------ load


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all processes, /proc/stat ticks)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_share(busy0: float, own_cpu_s: float, wall: float) -> float:
    """Share of all cores that other processes used over ``wall`` seconds since the
    machine's busy time was ``busy0``, given the ``own_cpu_s`` CPU seconds of the
    measured work (vLLM pins its threads to the cores: another busy process slows a call
    many times over, so every measurement records this)."""
    return max(0.0, busy_cpu_s() - busy0 - own_cpu_s) / (wall * os.cpu_count())


class Meter:
    """Wall time, this process's CPU time and the others' share of the cores since it
    was made (``Meter()`` right before the measured work)."""

    def __init__(self) -> None:
        self.t0, self.c0, self.b0 = time.perf_counter(), time.process_time(), busy_cpu_s()

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def cpu(self) -> float:
        return time.process_time() - self.c0

    def others(self, wall: float | None = None) -> float:
        """Others' share of all cores over ``wall`` (default: the whole time since made)."""
        return others_share(self.b0, self.cpu(), self.wall() if wall is None else wall)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def other_busy_processes(patterns: tuple[str, ...], ignore: str | None = None) -> list[str]:
    """Other processes whose command line contains one of ``patterns`` (and not
    ``ignore``), as "pid: command"; never this process, its children or the processes
    that started it (a ``timeout`` wrapper names the script too)."""
    mine, pid, ours, found = os.getpid(), os.getpid(), set(), []
    while pid > 1:
        ours.add(pid)
        pid = _parent(pid)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(pid) in ours or _parent(int(pid)) == mine or not cmd or (ignore and ignore in cmd):
            continue
        if any(p in cmd for p in patterns):
            found.append(f"{pid}: {cmd[:120]}")
    return found


def wait_for_quiet(max_minutes: float, patterns: tuple[str, ...], label: str = "", ignore: str | None = None) -> dict:
    """Waits (60 s at a time, up to ``max_minutes``) for a 1-minute load < 1 and none of
    the ``patterns`` processes; returns what it saw. Runs anyway when the machine stays busy."""
    prefix = f"[{label}] " if label else ""
    t0 = time.time()
    while True:
        load, busy = os.getloadavg()[0], other_busy_processes(patterns, ignore)
        quiet, waited = load < 1.0 and not busy, time.time() - t0
        if quiet or waited >= max_minutes * 60:
            out = {"quiet": quiet, "waited_s": round(waited), "loadavg_1min": round(load, 2), "busy_processes": busy}
            print(f"{prefix}quiet check: {out}", flush=True)
            return out
        print(f"{prefix}machine busy (load {load:.2f}, {len(busy)} processes: {[b[:60] for b in busy]}); "
              "waiting 60 s", flush=True)
        time.sleep(60)


def settle(max_minutes: float, patterns: tuple[str, ...], probe_s: float = 5.0) -> float:
    """Between calls: waits (30 s at a time, up to ``max_minutes``) until none of the
    ``patterns`` processes runs and, over ``probe_s`` of this process idling, other
    processes use under 5% of the cores (the load average would count this run's own
    work). Returns the seconds waited."""
    t0 = time.time()
    while True:
        meter = Meter()
        time.sleep(probe_s)
        share, busy = meter.others(probe_s), other_busy_processes(patterns)
        if (share < 0.05 and not busy) or time.time() - t0 >= max_minutes * 60:
            return time.time() - t0
        print(f"  others busy ({share:.0%} of the cores, {len(busy)} processes); waiting 30 s", flush=True)
        time.sleep(30)


def proc_status_kb(key: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, ...); 0 when absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_bytes() -> int:
    """This process's peak RSS (``ru_maxrss``, which Linux reports in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------ scheduling


def interleaved(variants, rounds: int) -> list[tuple[int, object]]:
    """``(round, variant)`` pairs in ABBA order: even rounds in the given order, odd
    rounds reversed, so every variant sees the same background load on average."""
    variants = list(variants)
    return [(r, v) for r in range(rounds) for v in (variants if r % 2 == 0 else variants[::-1])]


def median_seconds(fn, reps: int, warmup: int = 1, sync=lambda: None) -> float:
    """Seconds of ``fn()`` over ``reps`` runs after ``warmup`` untimed ones; ``sync()``
    (e.g. ``torch.cuda.synchronize``) ends every run. The middle run (the upper one of
    two when ``reps`` is even)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


# --------------------------------------------------------------- subprocesses


def _child_cmd(script: str, task: str, spec_path: Path, result_path: Path, python: str | None) -> list[str]:
    return [python or sys.executable, str(Path(script).resolve()), "--child", task, "--child-spec", str(spec_path),
            "--child-result", str(result_path)]


def run_child(script: str, task: str, spec: dict, *, python: str | None = None, timeout: float | None = None,
              env: dict | None = None, load: bool = False) -> dict:
    """Runs ``python script --child task --child-spec S --child-result R`` in a fresh
    interpreter (cwd: the repository) and returns the JSON the child wrote to R, with
    its ``wall_s``; an ``error`` dict (and the stderr's tail) when it fails or times
    out. ``load``: also the machine's busy share and the others' share of the cores
    while it ran (the child's own CPU from ``RUSAGE_CHILDREN``)."""
    with tempfile.TemporaryDirectory(prefix="qed-bench-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        b0, t0 = busy_cpu_s(), time.perf_counter()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            proc = subprocess.run(_child_cmd(script, task, spec_path, result_path, python), capture_output=True,
                                  text=True, timeout=timeout, cwd=REPO, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result_path.exists():
            return {"error": f"child exited {proc.returncode}", "stderr_tail": (proc.stderr or proc.stdout)[-2000:],
                    "wall_s": wall}
        res = json.loads(result_path.read_text())
        res["wall_s"] = wall
        if load:
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            res["machine_busy_share"] = (busy_cpu_s() - b0) / (wall * os.cpu_count())
            res["others_cpu_share"] = others_share(b0, child_cpu, wall)
        return res


def say(kind: str, payload: dict) -> None:
    """In a lockstep child: one protocol line to the parent."""
    print(PROTOCOL + json.dumps({"kind": kind, **payload}), flush=True)


def wait_go() -> None:
    """In a lockstep child: blocks until the parent says "step" (exits if it stopped)."""
    if sys.stdin.readline().strip() != "step":
        raise SystemExit("parent stopped the run")


class StepChild:
    """A child process (``script --child task``) driven one step at a time: the child
    ``say``s "ready" once, then per step waits for "step" on stdin (``wait_go``) and
    ``say``s "done". ``steps`` keeps every "done" message, with the others' share of the
    cores during the step when the child reports its ``cpu_s`` and ``wall_s``."""

    def __init__(self, script: str, task: str, name: str, spec: dict, tmp: Path, python: str | None = None) -> None:
        self.name, self.steps = name, []
        self.spec_path, self.result_path = tmp / f"{name}-spec.json", tmp / f"{name}-result.json"
        self.err_path = tmp / f"{name}-stderr.txt"
        self.spec_path.write_text(json.dumps(spec))
        self.err = open(self.err_path, "w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(_child_cmd(script, task, self.spec_path, self.result_path, python),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     cwd=REPO)

    def expect(self, kind: str) -> dict:
        """The child's next protocol message of ``kind`` (other output is skipped)."""
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                msg = json.loads(line[len(PROTOCOL):])
                if msg["kind"] == kind:
                    return msg
        raise RuntimeError(f"{self.name} child ended early (rc {self.proc.wait()})")

    def step(self) -> dict:
        """Lets the child run one step; returns its "done" message."""
        b0 = busy_cpu_s()
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        msg = self.expect("done")
        if "cpu_s" in msg and "wall_s" in msg:
            msg["others_cpu_share"] = others_share(b0, msg["cpu_s"], msg["wall_s"])
        self.steps.append(msg)
        return msg

    def finish(self) -> dict:
        """Closes stdin, waits, returns the child's result JSON with its ``wall_s`` (from start)."""
        self.proc.stdin.close()
        for _ in self.proc.stdout:
            pass
        rc = self.proc.wait()
        self.err.close()
        if rc != 0 or not self.result_path.exists():
            return self.fail(f"child exited {rc}")
        return {**json.loads(self.result_path.read_text()), "wall_s": round(time.perf_counter() - self.t0, 1)}

    def fail(self, what: str) -> dict:
        """Kills the child if alive; an error dict with its stderr's tail."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.err.closed:
            self.err.close()
        return {"error": what, "stderr_tail": self.err_path.read_text()[-3000:]}


# --------------------------------------------------------------------- numbers


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is 0."""
    return a / b if a is not None and b else None


def ratio_summary(ratios: list[float]) -> dict:
    """The median, smallest and largest of per-round ratios."""
    return {"ratio": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``xs``, linearly interpolated between order statistics."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def fmt(x, spec: str = ".2f") -> str:
    """``format(x, spec)``, or "-" for None."""
    return "-" if x is None else format(x, spec)


# --------------------------------------------------------------------- results


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table (first column left-aligned, the rest right-aligned) and a blank line."""
    return ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows), ""]


def write_results(out: str | Path, name: str, markdown: str | list[str] | None, data, *, indent: int = 2,
                  default=None) -> tuple[Path | None, Path]:
    """Writes ``<out>/<name>.md`` (a string as it is; lines joined with newlines and
    ended with one; None: no markdown) and ``<out>/<name>.json`` (``data`` as indented
    JSON, ``default`` for what JSON cannot hold); makes ``out``. Returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md_path = None
    if markdown is not None:
        md_path = out / f"{name}.md"
        md_path.write_text(markdown if isinstance(markdown, str) else "\n".join(markdown) + "\n")
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(data, indent=indent, default=default) + "\n")
    return md_path, json_path
