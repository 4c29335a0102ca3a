"""``make demo``: SFT of the demo model on the shipped proofs, then a summary of
where everything went and how the run went. Extra arguments are passed to ``qed fit``
(e.g. ``python -m qed_lightning.demo --trainer.max_epochs=1``)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from qed_lightning.cli import run_cli

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "sft.yaml"


def summarize(metrics_csv: Path) -> dict[str, float]:
    with metrics_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    if not rows:
        raise RuntimeError(f"{metrics_csv} has no training steps")
    tokens = sum(float(r["train/tokens"]) for r in rows)
    seconds = sum(float(r["train/step_time_s"]) for r in rows)
    return {
        "steps": len(rows),
        "tokens_per_s": tokens / seconds,
        "loss_first": float(rows[0]["train/loss"]),
        "loss_last": float(rows[-1]["train/loss"]),
    }


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not DEMO_CONFIG.is_file():
        raise SystemExit(f"demo config not found at {DEMO_CONFIG}: run the demo from a checkout of the repository")
    cli = run_cli(["fit", "--config", str(DEMO_CONFIG), *argv])
    trainer = cli.trainer
    log_dir = Path(trainer.log_dir).resolve()
    stats = summarize(log_dir / "metrics.csv")
    ckpt = trainer.checkpoint_callback
    export = next(cb.export_dir for cb in trainer.callbacks if hasattr(cb, "export_dir"))
    print(
        "\n== qed demo: SFT done ==\n"
        f"logs:        {log_dir}  (metrics.csv, config.yaml, run_metadata.json)\n"
        f"checkpoint:  {Path(ckpt.last_model_path or ckpt.best_model_path).resolve()}\n"
        f"HF export:   {export}\n"
        f"steps:       {stats['steps']}\n"
        f"tokens/s:    {stats['tokens_per_s']:.0f}\n"
        f"loss:        {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}\n"
    )


if __name__ == "__main__":
    main()
