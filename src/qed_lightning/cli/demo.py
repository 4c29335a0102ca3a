"""``make demo``: SFT of the demo model on the shipped proofs, RL of the SFT export with
an in-process judge, then an evaluation of the RL export, each followed by a summary
of where everything went and how the run went.

``python -m qed_lightning.cli.demo`` runs all three; ``python -m qed_lightning.cli.demo sft
--trainer.max_epochs=1`` (or ``rl ...``, ``eval ...``) runs one stage, passing the
remaining arguments to its ``qed fit`` (``qed eval``)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from qed_lightning.cli import eval_command, run_cli, start, take_flags

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "demo"


def _rows(metrics_csv: Path, key: str) -> list[dict]:
    with metrics_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    if not rows:
        raise RuntimeError(f"{metrics_csv} has no training steps")
    return rows


def summarize(metrics_csv: Path) -> dict[str, float]:
    """SFT: steps, tokens/s, first and last loss."""
    rows = _rows(metrics_csv, "train/loss")
    tokens = sum(float(r["train/tokens"]) for r in rows)
    seconds = sum(float(r["train/step_time_s"]) for r in rows)
    return {"steps": len(rows), "tokens_per_s": tokens / seconds,
            "loss_first": float(rows[0]["train/loss"]), "loss_last": float(rows[-1]["train/loss"])}


def summarize_rl(metrics_csv: Path) -> dict[str, float]:
    """RL: steps, mean reward per step, judge failure rate, seconds per stage."""
    rows = _rows(metrics_csv, "reward/mean")
    mean = lambda key: sum(float(r[key]) for r in rows) / len(rows)  # noqa: E731
    return {"steps": len(rows), "rewards": [round(float(r["reward/mean"]), 3) for r in rows],
            "judge_failure_rate": mean("judge/failure_rate"), "rollout_s": mean("time/rollout_s"),
            "train_s": mean("time/train_s"), "sync_s": mean("time/sync_s")}


def _fit(config: str, argv: list[str]):
    path = CONFIGS / config
    if not path.is_file():
        raise SystemExit(f"demo config not found at {path}: run the demo from a checkout of the repository")
    trainer = run_cli(["fit", "--config", str(path), *argv]).trainer
    export = next((cb.export_dir for cb in trainer.callbacks if hasattr(cb, "export_dir")), None)
    return trainer, Path(trainer.log_dir).resolve(), export


def run_sft(argv: list[str]) -> Path:
    trainer, log_dir, export = _fit("sft.yaml", argv)
    stats = summarize(log_dir / "metrics.csv")
    ckpt = trainer.checkpoint_callback
    print(
        "\n== qed demo: SFT done ==\n"
        f"logs:        {log_dir}  (metrics.csv, config.yaml, run_metadata.json)\n"
        f"checkpoint:  {Path(ckpt.last_model_path or ckpt.best_model_path).resolve()}\n"
        f"HF export:   {export}\n"
        f"steps:       {stats['steps']}\n"
        f"tokens/s:    {stats['tokens_per_s']:.0f}\n"
        f"loss:        {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}\n"
    )
    return Path(export)


def run_rl(argv: list[str]) -> Path | None:
    trainer, log_dir, export = _fit("rl.yaml", argv)
    s = summarize_rl(log_dir / "metrics.csv")
    print(
        "\n== qed demo: RL done ==\n"
        f"logs:        {log_dir}  (metrics.csv, rollouts/step_*.jsonl: what the model wrote, with verdicts)\n"
        f"HF export:   {export}\n"
        f"steps:       {s['steps']}, mean reward per step {s['rewards']}\n"
        f"judge:       failure rate {s['judge_failure_rate']:.2f}\n"
        f"seconds:     rollout (generate + judge) {s['rollout_s']:.1f}, train {s['train_s']:.1f}, "
        f"weight push {s['sync_s']:.2f} per step\n"
        "Read the rollouts with notebooks/rollout_inspector.ipynb (QED_ROLLOUT_DIR=<logs>/rollouts).\n"
    )
    return Path(export) if export else None


def run_eval(argv: list[str]) -> dict:
    path = CONFIGS / "eval.yaml"
    if not path.is_file():
        raise SystemExit(f"demo config not found at {path}: run the demo from a checkout of the repository")

    summary = eval_command(["--config", str(path), *argv])
    print(
        "\n== qed demo: evaluation done ==\n"
        f"report:      {summary['report']}  (records.jsonl and plots beside it)\n"
        f"avg@{summary['k']}:       {_pct(summary['avg'])} (spread {_pct(summary['spread'])}), "
        f"pass@1 {_pct(summary['pass_at_1'])}\n"
        f"judge:       failure rate {summary['failure_rate']:.2f}\n"
    )
    return summary


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1f}%"


def main(argv: list[str] | None = None) -> None:
    """Like ``qed``: ``--debug`` shows an error's traceback, ``--verbose`` every log line."""
    argv, debug, verbose = take_flags(list(sys.argv[1:] if argv is None else argv))
    start("demo", lambda: _run(argv), debug, verbose)


def _run(argv: list[str]) -> None:
    stages = {"sft": run_sft, "rl": run_rl, "eval": run_eval}
    if argv and argv[0] in stages:
        stages[argv[0]](argv[1:])
        return
    export = run_sft(argv)
    export = run_rl([f"--model.model={export}"])  # RL starts from the SFT export, as in the paper
    if export is not None:
        run_eval([f"--policy.init_args.model={export}", "--model_label=demo-rl"])


if __name__ == "__main__":
    main()
