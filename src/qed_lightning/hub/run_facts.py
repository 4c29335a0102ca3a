"""What a model card says about the run behind an export, gathered from the run's own
files: the resolved ``config.yaml``, ``metrics.csv`` and ``run_metadata.json`` of its log
directory (or, without them, the checkpoint's hyperparameters).

The facts are a plain JSON-able dict (``qed_run.json`` in the export), so the card can
be written again later, e.g. when ``qed eval`` adds results, without the run at hand.
Nothing here names a path of the machine the run was on: a local model or data
directory appears by its folder name only.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Mapping

from qed_lightning import __version__

__all__ = ["FINAL_METRICS", "KEY_SETTINGS", "KNOWN_LICENSES", "TOKEN_COLUMNS", "collect_run_facts", "stage_of"]

# The hub's license ids of base models whose license is known; other bases get none
# (a wrong license is worse than a missing one).
KNOWN_LICENSES = {
    "Qwen/Qwen3-4B-Thinking-2507": "apache-2.0",
    "Qwen/Qwen3-4B-Instruct-2507": "apache-2.0",
    "Qwen/Qwen3-4B": "apache-2.0",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "lm-provers/QED-Nano-SFT": "apache-2.0",
    "lm-provers/QED-Nano": "apache-2.0",
}
# What the built-in model aliases stand for on the hub (``tiny`` is built here: no hub model).
ALIAS_HUB_IDS = {"demo": "HuggingFaceTB/SmolLM2-135M-Instruct"}

# Summed over the steps the export has trained: column -> what the card calls it.
TOKEN_COLUMNS = {
    "train/target_tokens": "trained (target) tokens",
    "train/tokens": "tokens processed (prompts included)",
    "rollout/completion_tokens": "completion tokens sampled",
}
# The last value of each, as of the exported step (and every ``eval/`` column).
FINAL_METRICS = ("train/loss", "val/loss", "reward/mean", "reward/success_rate", "train/kl", "train/entropy",
                 "rollout/completion_tokens_mean")
AFTER_STEP_PREFIXES = ("eval/", "val/")  # logged against the finished-step count, not the step index

# The card's table of key settings: (label, dotted path in the resolved config); a path
# the config does not hold is left out, so one list serves every stage.
KEY_SETTINGS = (
    ("base model", "model.init_args.model"),
    ("base model revision", "model.init_args.revision"),
    ("seed", "seed_everything"),
    ("weights dtype", "model.init_args.dtype"),
    ("precision", "trainer.precision"),
    ("devices x nodes", "trainer.devices"),
    ("max epochs", "trainer.max_epochs"),
    ("max steps", "trainer.max_steps"),
    ("optimizer", "model.init_args.optimizer"),
    ("learning rate", "model.init_args.lr"),
    ("lr schedule", "model.init_args.lr_schedule"),
    ("warmup ratio", "model.init_args.warmup_ratio"),
    ("weight decay", "model.init_args.weight_decay"),
    ("max grad norm", "model.init_args.max_grad_norm"),
    ("SFT samples per step", "data.init_args.samples_per_step"),
    ("SFT max length", "data.init_args.max_length"),
    ("SFT packing", "data.init_args.packing"),
    ("RL loss", "model.init_args.loss"),
    ("RL advantage", "model.init_args.advantage"),
    ("KL coefficient", "model.init_args.kl_coef"),
    ("RL prompts per step", "data.init_args.prompts_per_step"),
    ("group size n", "model.init_args.sampling.n"),
    ("sampling temperature", "model.init_args.sampling.temperature"),
    ("max new tokens", "model.init_args.sampling.max_tokens"),
    ("overlong filtering", "model.init_args.overlong_filtering"),
    ("judge prompt", "model.init_args.judge.init_args.template"),
    ("judge model", "model.init_args.judge.init_args.client.init_args.model"),
    ("reasoning cache", "model.init_args.reasoning_cache"),
)
# Module class -> stage, for a module without a reasoning cache setting.
STAGES = {"SFTModule": "SFT", "GRPOModule": "RL"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def dig(config: Mapping | None, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def stage_of(config: Mapping) -> str:
    """``SFT``, ``RL`` or ``RC`` (RL with a reasoning cache) from the config's model class."""
    class_path = str(dig(config, "model.class_path") or "")
    name = class_path.rsplit(".", 1)[-1]
    if name not in STAGES:
        return name or "unknown"
    if STAGES[name] == "RL" and dig(config, "model.init_args.reasoning_cache"):
        return "RC"
    return STAGES[name]


def _hub_id(name: str | None) -> str | None:
    """A hub repo id, or None for an alias without one, a local directory, or nothing."""
    if not name:
        return None
    if name in ALIAS_HUB_IDS:
        return ALIAS_HUB_IDS[name]
    if Path(name).expanduser().exists() or not _HUB_ID.match(name):
        return None
    return name


def _shown(name: str | None) -> str | None:
    """A model or data source as the card shows it: a local path by its folder name."""
    if not name:
        return name
    if Path(name).expanduser().exists() or name.startswith(("/", "~", ".")):
        return f"local: {Path(name).expanduser().resolve().name}"
    return name


def _local_card_metadata(name: str | None) -> dict:
    """The YAML metadata of a local base model's own card (an earlier export), if any."""
    if not name or not (Path(name).expanduser() / "README.md").is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(Path(name).expanduser() / "README.md").data.to_dict()
    except Exception:  # noqa: BLE001 (an unreadable card of the base only costs its metadata)
        return {}


def base_model_facts(config: Mapping) -> dict:
    name = dig(config, "model.init_args.model")
    hub_id = _hub_id(name)
    inherited = _local_card_metadata(name) if hub_id is None else {}
    # A base that is itself an export (the RL stage from the SFT export): its own card
    # names the hub model it descends from and that model's license.
    root = hub_id or inherited.get("base_model")
    license_ = KNOWN_LICENSES.get(hub_id or "") or inherited.get("license") or KNOWN_LICENSES.get(root or "")
    return {"name": _shown(name), "revision": dig(config, "model.init_args.revision"), "hub_id": hub_id,
            "lineage_base": None if hub_id else root, "license": license_}


def dataset_facts(config: Mapping) -> list[dict]:
    data = dig(config, "data.init_args") or {}
    source = data.get("source")
    if not source:
        return []
    return [{"source": _shown(source), "hub_id": None if source == "demo" else _hub_id(source),
             "config_name": data.get("config_name"), "split": data.get("split"), "revision": data.get("revision")}]


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def metrics_facts(metrics_csv: Path, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """(token sums, final metrics) over the rows of the steps an export at ``steps`` has
    trained: training rows ``step < steps``, ``eval/`` and ``val/`` rows ``step <= steps``."""
    if not metrics_csv.is_file():
        return {}, {}
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    tokens: dict[str, float] = {}
    final: dict[str, float] = {}
    for row in rows:
        at = _number(row.get("step"))
        if at is None or at > steps:
            continue
        for column, text in row.items():
            value = _number(text)
            if value is None or column == "step" or (at == steps and not column.startswith(AFTER_STEP_PREFIXES)):
                continue
            if column in TOKEN_COLUMNS:
                tokens[column] = tokens.get(column, 0.0) + value
            if column in FINAL_METRICS or column.startswith("eval/"):
                final[column] = value  # rows come in step order: the last one wins
    return tokens, final


def key_settings(config: Mapping) -> list[list]:
    rows = []
    for label, path in KEY_SETTINGS:
        value = dig(config, path)
        if value is None or value == {}:
            continue
        if path == "model.init_args.model":
            value = _shown(value)
        elif isinstance(value, Mapping):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
        rows.append([label, value])
    return rows


def collect_run_facts(config: Mapping, steps: int, log_dir: str | Path | None = None,
                      training_eval: dict | None = None) -> dict:
    """The card's facts of a run whose resolved config is ``config``, exported after
    ``steps`` optimizer steps; ``log_dir`` holds its ``metrics.csv`` and
    ``run_metadata.json`` when known. ``training_eval``: the evaluation callback's last
    result (``benchmark``, ``judge``, ``samples``, ``step`` and the summary's numbers)."""
    import json

    log_dir = Path(log_dir) if log_dir is not None else None
    tokens, final = metrics_facts(log_dir / "metrics.csv", steps) if log_dir else ({}, {})
    git: dict = {"commit": None, "dirty": None}
    if log_dir is not None and (log_dir / "run_metadata.json").is_file():
        git = json.loads((log_dir / "run_metadata.json").read_text()).get("git") or git
    else:
        from qed_lightning.callbacks.run_metadata import git_commit

        git = git_commit(Path(__file__).resolve().parent)
    return {
        "stage": stage_of(config),
        "module": str(dig(config, "model.class_path") or "").rsplit(".", 1)[-1] or None,
        "base_model": base_model_facts(config),
        "datasets": dataset_facts(config),
        "steps": int(steps),
        "tokens": {TOKEN_COLUMNS[k]: v for k, v in tokens.items()},
        "final_metrics": final,
        "settings": key_settings(config),
        "qed_version": __version__,
        "git": {"commit": git.get("commit"), "dirty": git.get("dirty")},
        "training_eval": training_eval,
    }
