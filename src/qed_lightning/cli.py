"""The ``qed`` command: LightningCLI with qed's defaults, plus ``qed export``, ``qed judge`` and ``qed eval``.

    qed fit --config configs/demo/sft.yaml --trainer.max_epochs=2
    qed fit --config configs/sft/qed_nano_sft.yaml --print_config
    qed export runs/.../checkpoints/last.ckpt out/model
    qed judge --config configs/judge/local_vllm.yaml --input proofs.jsonl --output verdicts.jsonl
    qed eval --config configs/eval/imo_proofbench.yaml --policy.init_args.model=<export dir>

Every run logs ``metrics.csv`` (``ResumableCSVLogger`` under ``runs/``), the resolved
``config.yaml`` and ``run_metadata.json``; checkpoints go to ``<log_dir>/checkpoints``
and a Hugging Face export to ``<log_dir>/hf_export`` when ``fit`` ends. Any setting
can also come from an environment variable ``PL_<SUBCOMMAND>__<KEY>`` (e.g.
``PL_FIT__TRAINER__MAX_EPOCHS=3``)."""
from __future__ import annotations

import os
import sys
import warnings
from typing import Sequence

# Lightning 2.6 still calls jsonargparse APIs deprecated in 4.49; the warnings are
# about Lightning's code, not the user's config, so they are muted unless asked for.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from qed_lightning.callbacks import HFExportCallback, PreemptionCallback, QedCheckpoint, RunMetadataCallback
from qed_lightning.preemption.slurm import pin_logger_versions

EXPORT_HELP = "qed export CHECKPOINT OUTPUT_DIR   write a Hugging Face model from a saved checkpoint"
JUDGE_HELP = "qed judge --config judge.yaml --input proofs.jsonl --output verdicts.jsonl   grade a file of proofs"
EVAL_HELP = "qed eval --config configs/eval/imo_proofbench.yaml   evaluate a model on a benchmark"

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "qed_lightning.loggers.ResumableCSVLogger",
        "init_args": {"save_dir": "runs", "name": "qed"},
    },
    # The SFT and rollout loaders shard by rank themselves (whole optimizer steps,
    # whole groups); Lightning's DistributedSampler would split them again.
    "use_distributed_sampler": False,
    "log_every_n_steps": 1,
}


class QedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Always-on callbacks get their own config sections (``checkpoint:``,
        # ``export:``), so presets layered on ``trainer.callbacks`` cannot drop them.
        parser.add_lightning_class_args(QedCheckpoint, "checkpoint")
        parser.add_lightning_class_args(HFExportCallback, "export")
        parser.add_lightning_class_args(PreemptionCallback, "preemption")

    def before_instantiate_classes(self) -> None:
        # A requeued SLURM job must write into the log directory (and find the
        # checkpoints) of its first start: the logger version is the job id.
        config = self.config[self.subcommand] if self.subcommand else self.config
        pin_logger_versions(config.trainer)
        fill_run_seed(config)


def fill_run_seed(config) -> None:
    """A model or data ``seed`` left unset takes the run's ``seed_everything`` (an int
    by now: LightningCLI has resolved ``true`` to the seed it drew), so the saved
    config.yaml says which seed sampled the rollouts and ordered the data."""
    seed = config.get("seed_everything")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return
    for section in ("model", "data"):
        init_args = (config.get(section) or {}).get("init_args") if hasattr(config.get(section), "get") else None
        if init_args is not None and "seed" in init_args and init_args["seed"] is None:
            init_args["seed"] = seed


def run_cli(args: Sequence[str] | None = None, run: bool = True) -> QedCLI:
    with warnings.catch_warnings():
        if args is not None:  # called from Python (tests, notebooks): sys.argv is not ours
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return _make_cli(args, run)


def _make_cli(args: Sequence[str] | None, run: bool) -> QedCLI:
    return QedCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunMetadataCallback,
        # A requeued job continues in its own log directory and rewrites its config.
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        parser_kwargs={
            "default_env": True,
            "env_prefix": "PL",
            "description": f"qed_lightning trainer.  Also: {EXPORT_HELP};  {JUDGE_HELP};  {EVAL_HELP}",
        },
        args=args,
        run=run,
    )


def export_main(args: Sequence[str]) -> None:
    from jsonargparse import CLI

    from qed_lightning.export import export_checkpoint

    out = CLI(export_checkpoint, args=list(args), as_positional=True)
    print(f"exported to {out}")


def judge_main(args: Sequence[str]) -> None:
    from jsonargparse import CLI

    from qed_lightning.judging.grade_file import grade_file

    CLI(grade_file, args=list(args), as_positional=False)


def eval_main(args: Sequence[str]) -> None:
    from jsonargparse import CLI

    from qed_lightning.evaluation.runner import evaluate

    summary = CLI(evaluate, args=list(args), as_positional=False)
    print(f"report: {summary['report']}")


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``qed``; pass ``args`` to call it from tests and notebooks."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "export":
        export_main(argv[1:])
        return
    if argv and argv[0] == "judge":
        judge_main(argv[1:])
        return
    if argv and argv[0] == "eval":
        eval_main(argv[1:])
        return
    run_cli(None if args is None else argv)


if __name__ == "__main__":
    main()
