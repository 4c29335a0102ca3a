"""How long ``qed`` takes to answer before it does any work, beside ``python -c pass``.

Each command runs as a fresh process (the installed ``qed`` entry point of the
interpreter running this script), ``--repeats`` times, round robin so every command sees
the same background load; the table gives the median and the fastest wall time and the
ratio of the median to the median of ``python -c pass``:

- ``qed --help``, ``qed --version``, ``qed fitt`` (a typo: the error and the list of
  commands) answer without importing torch, Lightning or vLLM;
- ``qed fit --help`` builds the full LightningCLI parser (imports torch and Lightning);
- ``qed fit`` with a bad value for a setting: a config error, as fast as its parser;
- ``qed eval --help`` and ``qed judge --help``: the evaluation and grading parsers;
- ``before: qed --help``: the same help from ``cli.py`` of git revision ``--before``
  (default d699e8b, the last one whose top-level help was LightningCLI's).

Run: ``.venv/bin/python bench/cli_startup.py`` (~2 min on 2 cores; ``--repeats 3`` for
less). Writes ``bench/results/cli_startup.md`` and ``.json``. The machine may be shared
and noisy: compare the ratios, not absolute numbers.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, median, write_results

QED = str(Path(sys.executable).with_name("qed"))
SFT = str(REPO / "configs/demo/sft.yaml")


def commands(before: Path | None) -> dict[str, list[str]]:
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "qed --help": [QED, "--help"],
        "qed --version": [QED, "--version"],
        "qed fitt (typo)": [QED, "fitt"],
        "qed fit --help": [QED, "fit", "--help"],
        "qed fit (bad setting)": [QED, "fit", "--config", SFT, "--trainer.max_epochs=oops"],
        "qed eval --help": [QED, "eval", "--help"],
        "qed judge --help": [QED, "judge", "--help"],
    }
    if before is not None:
        cmds["before: qed --help"] = [sys.executable, "-c",
                                      f"import sys; sys.path.insert(0, {str(before)!r}); import cli_before; "
                                      "cli_before.main(['--help'])"]
    return cmds


def old_cli(rev: str, into: Path) -> Path | None:
    """``cli.py`` of git revision ``rev`` as module ``cli_before`` in ``into`` (None if absent)."""
    out = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/qed_lightning/cli.py"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    (into / "cli_before.py").write_text(out.stdout)
    return into


def time_once(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - start, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", default="d699e8b",
                    help="git revision whose cli.py gives the 'before' row ('' for none)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        before = old_cli(args.before, Path(tmp)) if args.before else None
        cmds = commands(before)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        codes: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                seconds, codes[name] = time_once(cmd)
                times[name].append(seconds)

    base = median(times["python -c pass"])
    rows = [{"command": name, "exit_code": codes[name], "median_s": round(median(t), 4),
             "min_s": round(min(t), 4), "ratio_to_python": round(median(t) / base, 1),
             "all_s": [round(x, 4) for x in t]} for name, t in times.items()]
    meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "repeats": args.repeats, "before_revision": args.before or None}
    lines = ["# `qed` startup (wall time of a fresh process)", "",
             f"{meta['date']}, Python {meta['python']}, {meta['cpus']} CPUs, load average "
             f"{', '.join(f'{x:.2f}' for x in meta['load_average'])} at the end; median and fastest of "
             f"{args.repeats} runs, round robin. Written by `bench/cli_startup.py`.", "",
             "| command | exit | median s | fastest s | median / `python -c pass` |", "|---|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['exit_code']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
              f"{r['ratio_to_python']:.1f}x |" for r in rows]
    write_results(args.out, "cli_startup", lines, {"meta": meta, "rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
