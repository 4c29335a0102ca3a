"""What a run needs to know about the SLURM job it runs in."""
from __future__ import annotations

import logging
import os
import re
import subprocess
from typing import Mapping

__all__ = ["pin_logger_versions", "requeue_job", "slurm_job_id", "slurm_log_version", "undetected_slurm_reason"]

log = logging.getLogger(__name__)

# Lightning treats jobs with these names as interactive shells, not SLURM-managed runs.
INTERACTIVE_JOB_NAMES = ("bash", "interactive")


def slurm_job_id(env: Mapping[str, str] | None = None) -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array jobs."""
    env = os.environ if env is None else env
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return env.get("SLURM_JOB_ID") or None


def slurm_log_version(env: Mapping[str, str] | None = None) -> str | None:
    """The logger version of a SLURM job: the same across its requeues, so a resumed run
    writes into the directory (and next to the checkpoints) of its first start."""
    job = slurm_job_id(env)
    return None if job is None else f"slurm_{job}"


def undetected_slurm_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Why a process inside a SLURM allocation would not be run as a SLURM job by
    Lightning (no rank from SLURM, no requeue), or None."""
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return None
    if not env.get("SLURM_NTASKS"):
        return "SLURM_NTASKS is not set: start the trainer with srun inside the allocation"
    name = env.get("SLURM_JOB_NAME", "")
    if name in INTERACTIVE_JOB_NAMES:
        return (f"the job is named {name!r}, which Lightning takes for an interactive shell: "
                "submit with --job-name=<something else>")
    return None


def requeue_job(job_id: str, timeout_s: float = 60.0) -> bool:
    """``scontrol requeue``: SLURM stops every task of the job and starts it again
    (SLURM_RESTART_COUNT + 1). Returns whether SLURM accepted."""
    if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job_id):
        raise ValueError(f"not a SLURM job id: {job_id!r}")
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("requeue of SLURM job %s failed: %s", job_id, err)
        return False
    if done.returncode != 0:
        log.error("scontrol requeue %s exited %d: %s", job_id, done.returncode, done.stderr.strip())
        return False
    log.info("requeued SLURM job %s", job_id)
    return True


# Loggers whose directory is named by ``version``; W&B resumes a run by ``id``.
_VERSIONED_LOGGERS = ("CSVLogger", "ResumableCSVLogger", "TensorBoardLogger")


def pin_logger_versions(trainer_config, env: Mapping[str, str] | None = None) -> list[str]:
    """Under a SLURM job, set each configured logger's unset version (W&B: id, with
    resume allowed) to the job's, in place; returns the class names it pinned.
    ``trainer_config`` is the parsed ``trainer`` section (``logger``: one entry, a
    list, or a bool)."""
    version = slurm_log_version(env)
    if version is None or undetected_slurm_reason(env) is not None:
        return []
    loggers = trainer_config.get("logger") if hasattr(trainer_config, "get") else None
    entries = loggers if isinstance(loggers, list) else [loggers]
    pinned = []
    for entry in entries:
        class_path = entry.get("class_path") if hasattr(entry, "get") else None
        if not class_path:
            continue
        name, args = class_path.rsplit(".", 1)[-1], entry.get("init_args")
        if args is None:
            continue
        if name in _VERSIONED_LOGGERS and args.get("version") is None:
            args["version"] = version
            pinned.append(name)
        elif name == "WandbLogger" and args.get("id") is None:
            args["id"] = version
            args["resume"] = args.get("resume") or "allow"
            pinned.append(name)
    return pinned
