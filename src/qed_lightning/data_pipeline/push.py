"""``push_to_hub`` of a ``qed data`` step: checked before any work, done after the
summary and the dataset card are written (``hub/push.py`` does the upload)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["check_push", "push_output"]


def check_push(repo_id: str | None) -> None:
    """Fail now, not after hours of generation, when a push could not happen: no token
    in ``HF_TOKEN`` or a malformed repo id."""
    if repo_id is None:
        return
    from qed_lightning.hub.push import check_repo_id, hub_token

    hub_token()
    check_repo_id(repo_id)


def push_output(folder: str | Path, repo_id: str | None) -> str | None:
    if repo_id is None:
        return None
    from qed_lightning.hub.push import push_dataset

    return push_dataset(folder, repo_id)
