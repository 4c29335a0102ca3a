"""What a preemption costs, and what saving at the end of a step's rollouts buys (CPU).

Three `qed fit` RL runs in this process, the same model, problems, seeds and rule judge
(so every second is the trainer's and its engine's, not a grader's):

- ``whole``: ``--steps`` steps uninterrupted; per step, the rollout phase (generate +
  judge) and the train phase, from ``metrics.csv`` (median over the steps after the
  first);
- ``boundary``: SIGUSR1 after step 1's rollouts: the run saves at the end of step 1
  (the save's seconds are the preemption callback's own measurement);
- ``mid_step``: SIGUSR1 before step 1's rollouts: the run saves when they are graded,
  with them; then it is resumed, and its step 1 (trained on the saved rollouts) is timed
  from its metrics row.

From these: the lead a `--signal` needs in the worst case (boundary saves only: a whole
step + a save; with the mid-step save: the longer of rollouts + that save and training +
a boundary save), and how long the resumed step takes on its saved rollouts.

Run: ``.venv/bin/python bench/preemption.py`` (~4 min with the demo model on 2 cores;
``--model tiny`` for a quick run). Writes ``<out>/preemption.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import platform
import tempfile
from pathlib import Path

from harness import REPO, median, write_results


def args(model: str, root: Path, steps: int, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(REPO / "configs/demo/rl.yaml"), f"--model.model={model}",
        "--model.judge=qed_lightning.judging.RuleJudge",
        "--model.judge.rule=qed_lightning.judging.rules:share_of_letter_e", "--model.judge.answer_mode=whole",
        f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
        "--trainer.enable_progress_bar=false", "--checkpoint.every_n_train_steps=1", "--export.enabled=false",
        "--ckpt_path=last", *extra,
    ]


def signal_at(step: int, when: str) -> str:
    return ('--trainer.callbacks+={"class_path": "qed_lightning.testing.interruptions.SignalAtStep", '
            f'"init_args": {{"step": {step}, "when": "{when}"}}}}')


def rows(root: Path) -> list[dict]:
    with (root / "demo-rl" / "run" / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("reward/mean")]


def saved(cli) -> dict:
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "PreemptionCallback").saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    opts = parser.parse_args()
    if opts.steps < 3:
        # the signal comes during step 1; at the run's last step the trainer ends on its own
        # and the preemption callback has nothing to save early, so step 1 must not be the last
        parser.error(f"--steps {opts.steps}: needs at least 3 (signals come at step 1, which must not be the last step)")
    from qed_lightning.cli import run_cli

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_cli(args(opts.model, tmp / "whole", opts.steps))
        whole = rows(tmp / "whole")[1:] or rows(tmp / "whole")
        rollout_s = median(float(r["time/rollout_s"]) for r in whole)
        train_s = median(float(r["time/train_s"]) + float(r["time/sync_s"]) for r in whole)

        boundary = saved(run_cli(args(opts.model, tmp / "boundary", opts.steps,
                                      signal_at(1, "before_optimizer_step"))))
        mid = saved(run_cli(args(opts.model, tmp / "mid", opts.steps, signal_at(1, "before_rollouts"))))
        run_cli(args(opts.model, tmp / "mid", opts.steps))
        resumed = next(r for r in rows(tmp / "mid") if int(r["step"]) == 1)
        assert float(resumed["rollout/from_saved"]) == 1.0
        ckpt_mb = Path(boundary["path"]).stat().st_size / 2**20
        pending_mb = sum(p.stat().st_size for p in (Path(mid["path"]).parent / "pending_rollouts").glob("*.pt")) / 2**20

    step_s = rollout_s + train_s
    result = {
        "date": _dt.date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "model": opts.model, "steps": opts.steps,
        "step_s": step_s, "rollout_s": rollout_s, "train_s": train_s,
        "boundary_save_s": boundary["seconds"], "mid_step_save_s": mid["seconds"],
        "checkpoint_mib": ckpt_mb, "pending_rollouts_mib": pending_mb,
        "resumed_step_rollout_s": float(resumed["time/rollout_s"]),
        "resumed_step_train_s": float(resumed["time/train_s"]) + float(resumed["time/sync_s"]),
        "lead_boundary_only_s": step_s + boundary["seconds"],
        # a signal during the rollouts is acted on when they end, one during training at the step's end
        "lead_with_mid_step_s": max(rollout_s + mid["seconds"], train_s + boundary["seconds"]),
    }
    result["lead_ratio"] = result["lead_with_mid_step_s"] / result["lead_boundary_only_s"]
    result["resumed_step_ratio"] = result["resumed_step_train_s"] / step_s
    md = [
        f"# Preemption on CPU ({result['date']}, {result['machine']}, model `{opts.model}`)", "",
        "| quantity | value |", "|---|---:|",
        f"| RL step (rollout + train), median | {step_s:.2f} s |",
        f"| rollout phase (generate + judge) | {rollout_s:.2f} s |",
        f"| train phase (+ weight push) | {train_s:.2f} s |",
        f"| save at the step boundary (`last.ckpt`, {ckpt_mb:.0f} MiB) | {boundary['seconds']:.2f} s |",
        f"| save at the end of the rollouts (checkpoint + {pending_mb:.2f} MiB of rollouts) | {mid['seconds']:.2f} s |",
        f"| resumed step on saved rollouts: rollout / train | {result['resumed_step_rollout_s']:.3f} s / "
        f"{result['resumed_step_train_s']:.2f} s ({result['resumed_step_ratio']:.2f}x a whole step) |",
        f"| worst-case lead, boundary saves only | {result['lead_boundary_only_s']:.2f} s |",
        f"| worst-case lead, with the mid-step save | {result['lead_with_mid_step_s']:.2f} s "
        f"({result['lead_ratio']:.2f}x) |",
        "", "One process on a shared 2-core machine: compare the ratios, not the seconds. Worst-case",
        "lead: a signal just after the previous check waits for a whole step and a save (boundary",
        "saves only), or for the longer of (rollouts + mid-step save) and (training + boundary save).",
        "Here training dominates the step (a CPU backward); at the paper's size generation does, and",
        "the lead must still cover the whole rollout phase: generation is one engine call, and",
        "nothing of it is saved before it ends.",
    ]
    write_results(opts.out, "preemption", md, result)
    print("\n".join(md))


if __name__ == "__main__":
    main()
