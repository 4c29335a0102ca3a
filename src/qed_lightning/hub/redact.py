"""Keeps secrets out of what an export carries (its card, its copy of the config).

Configs here name environment variables (``api_key_env``), never hold keys; still, a
setting named like a credential is blanked, and the value of every environment variable
named like one (``HF_TOKEN``, ``WANDB_API_KEY``, ``OPENAI_API_KEY``...) is cut out of
any text written, wherever it came from.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

__all__ = ["REDACTED", "redact_settings", "scrub", "secret_values"]

REDACTED = "<redacted>"
SECRET_SETTINGS = frozenset({"token", "hf_token", "api_key", "access_token", "password", "secret"})
_SECRET_ENV = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_CHARS = 8  # shorter values ("1", "false") are flags, and would cut ordinary words


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables named like credentials, longest first."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, env: Mapping[str, str] | None = None) -> str:
    for value in secret_values(env):
        text = text.replace(value, REDACTED)
    return text


def redact_settings(node: Any) -> Any:
    """A copy of a config tree with the values of credential-named settings blanked."""
    if isinstance(node, Mapping):
        return {k: (REDACTED if str(k).lower() in SECRET_SETTINGS and v is not None else redact_settings(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [redact_settings(v) for v in node]
    return node
