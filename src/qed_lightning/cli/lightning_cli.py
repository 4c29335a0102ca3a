"""``qed fit|validate|test|predict``: LightningCLI with qed's defaults.

Every run logs ``metrics.csv`` (``ResumableCSVLogger`` under ``runs/``), the resolved
``config.yaml``, ``run_metadata.json`` and ``qed.log`` (every log line, the ones the
console leaves out included); checkpoints go to ``<log_dir>/checkpoints`` and a Hugging
Face export to ``<log_dir>/hf_export`` when ``fit`` ends. Any setting can also come from
an environment variable ``PL_<SUBCOMMAND>__<KEY>`` (e.g. ``PL_FIT__TRAINER__MAX_EPOCHS=3``).
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

# Lightning 2.6 still calls jsonargparse APIs deprecated in 4.49; the warnings are
# about Lightning's code, not the user's config, so they are muted unless asked for.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from qed_lightning.callbacks import HFExportCallback, PreemptionCallback, QedCheckpoint, RunMetadataCallback
from qed_lightning.cli.log_setup import LOG_FILE_NAME, adopt_library_loggers, attach_log_file, detach_log_file, quiet
from qed_lightning.cli.nulls import NullSafeArgs
from qed_lightning.preemption.slurm import pin_logger_versions

__all__ = ["QedCLI", "RunLogFile", "TRAINER_DEFAULTS", "fill_run_seed", "run_cli"]

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


class QedArgumentParser(NullSafeArgs, LightningArgumentParser):
    """LightningCLI's parser, reading ``null`` at every depth (see ``cli.nulls``)."""


class RunLogFile(Callback):
    """Sends the log of the ``qed`` command to ``<log_dir>/qed.log`` once the run's
    directory is known (rank 0; a no-op when ``qed`` did not set up logging)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._attach(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A run that fails in its data's setup (before ``setup`` here) still leaves its
        # log; a failure to open it must not hide the run's own error.
        try:
            self._attach(trainer)
        except Exception:  # noqa: BLE001
            pass

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:
            detach_log_file()

    @staticmethod
    def _attach(trainer) -> None:
        # Not ``trainer.log_dir``: it broadcasts from rank 0, and asked on rank 0 alone (or
        # from one failing rank's exception hook) it waits forever for the other ranks.
        if not trainer.is_global_zero:
            return
        log_dir = trainer.loggers[0].log_dir if trainer.loggers else trainer.default_root_dir
        if log_dir is not None:
            attach_log_file(os.path.join(log_dir, LOG_FILE_NAME))


class QedCLI(LightningCLI):
    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(RunLogFile())
        if quiet():
            # Lightning's rich model summary prints a table to the console; the plain one
            # logs it (to the run's log file).
            trainer.callbacks[:] = [ModelSummary(max_depth=cb._max_depth) if type(cb) is RichModelSummary else cb
                                    for cb in trainer.callbacks]
        return trainer

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
    adopt_library_loggers()
    with warnings.catch_warnings():
        if args is not None:  # called from Python (tests, notebooks): sys.argv is not ours
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return QedCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunMetadataCallback,
            # A requeued job continues in its own log directory and rewrites its config.
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            parser_class=QedArgumentParser,
            parser_kwargs={"default_env": True, "env_prefix": "PL", "prog": "qed",
                           "description": "qed fit|validate|test|predict: LightningCLI with qed's defaults"},
            args=args,
            run=run,
        )
