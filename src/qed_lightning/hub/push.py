"""Upload of an export folder to the Hugging Face hub (``huggingface_hub``).

The token comes from the environment only (``HF_TOKEN``): never from a config, never
logged, never written into the card. ``hub_token`` is checked before any work (at the
start of ``qed export``, at the start of a fit that pushes), so a missing token fails in
seconds, not after the export or the training. The repository is created private unless
asked otherwise, as ``push_to_hub`` does in transformers and TRL.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from qed_lightning.errors import QedUserError
from qed_lightning.hub.redact import scrub

__all__ = ["HubPushError", "TOKEN_ENV", "check_repo_id", "hub_token", "prepare_repo", "push_dataset", "push_export"]

log = logging.getLogger(__name__)
TOKEN_ENV = "HF_TOKEN"


class HubPushError(QedUserError, RuntimeError):
    """The hub refused or could not be reached; the message says which repo and why."""


def hub_token(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    token = (env.get(TOKEN_ENV) or "").strip()
    if not token:
        raise HubPushError(f"push_to_hub needs a Hugging Face token with write access in the environment variable "
                           f"{TOKEN_ENV} (it is never read from a config); set {TOKEN_ENV} and run again")
    return token


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubPushError(f"push_to_hub: {repo_id!r} is not a hub repo id ('owner/name'): {err}") from None
    if "/" not in repo_id:
        raise HubPushError(f"push_to_hub: {repo_id!r} is not a hub repo id: name its owner, 'owner/name'")
    return repo_id


def _api(token: str):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _refused(repo_id: str, action: str, err: Exception) -> HubPushError:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, RepositoryNotFoundError) or status in (401, 403, 404):
        why = (f"the token in {TOKEN_ENV} cannot write to {repo_id!r} (HTTP {status}): use a token with write "
               "access to that owner, or another repo id")
    elif isinstance(err, HfHubHTTPError):
        why = f"the hub answered HTTP {status}: {err}"
    else:
        why = f"{type(err).__name__}: {err}"
    return HubPushError(scrub(f"push_to_hub: could not {action} {repo_id!r}: {why}"))


def prepare_repo(repo_id: str, private: bool = True, token: str | None = None, repo_type: str = "model") -> str:
    """Create ``repo_id`` if missing (``private``), before the work whose result it will
    hold; returns its URL. An existing repo is kept as it is."""
    token = token or hub_token()
    check_repo_id(repo_id)
    try:
        url = _api(token).create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
    except Exception as err:  # noqa: BLE001 (every failure becomes one message naming the repo)
        raise _refused(repo_id, "create", err) from err
    return str(url)


def push_export(export_dir: str | Path, repo_id: str, private: bool = True, commit_message: str | None = None,
                token: str | None = None, create: bool = True) -> str:
    """Upload the export folder (model, tokenizer, card, config) to ``repo_id``; returns
    the commit's URL.

    Args:
        export_dir: A folder written by ``qed export`` or a run's ``hf_export``.
        repo_id: ``owner/name`` on the hub.
        private: Create the repo private (an existing repo keeps its visibility).
        commit_message: Defaults to "Upload <folder name> with qed-lightning".
        token: Defaults to ``HF_TOKEN`` from the environment.
        create: Create the repo first; False when ``prepare_repo`` did, before the work.
    """
    token = token or hub_token()
    export_dir = Path(export_dir)
    if not (export_dir / "config.json").is_file():
        raise HubPushError(f"push_to_hub: {export_dir} is not a Hugging Face export (no config.json)")
    if create:
        prepare_repo(repo_id, private=private, token=token)
    message = commit_message or f"Upload {export_dir.name} with qed-lightning"
    try:
        commit = _api(token).upload_folder(repo_id=repo_id, folder_path=str(export_dir), repo_type="model",
                                           commit_message=message)
    except Exception as err:  # noqa: BLE001
        raise _refused(repo_id, "upload to", err) from err
    url = str(getattr(commit, "commit_url", None) or commit)
    log.info("pushed %s to the hub: %s", export_dir.name, url)
    return url


def push_dataset(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload a ``qed data`` output folder (data files, dataset card, summary) to the
    dataset repo ``repo_id``; the call store (``requests.jsonl``) stays local. Returns
    the commit's URL."""
    token = token or hub_token()
    prepare_repo(repo_id, private=private, token=token, repo_type="dataset")
    try:
        commit = _api(token).upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset",
                                           commit_message=f"Upload {Path(folder).name} with qed-lightning",
                                           ignore_patterns=["requests.jsonl", "*.tmp", "*.log"])
    except Exception as err:  # noqa: BLE001
        raise _refused(repo_id, "upload to", err) from err
    url = str(getattr(commit, "commit_url", None) or commit)
    log.info("pushed %s to the hub: %s", Path(folder).name, url)
    return url
