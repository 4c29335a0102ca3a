"""The problem classifier's reply: six flags in a JSON object, and a keep rule.

The reply is read from its last ```json fenced block, else its last ``{...}`` object.
A reply with no parseable object, a missing key or a value of the wrong type is
*unparseable*: counted and handled by ``KeepRule.on_unparseable``, never guessed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from qed_lightning.judging.answer import THINK_END

__all__ = ["FLAGS", "KeepRule", "parse_flags"]

BOOL_FLAGS = ("incomplete", "gaps", "wrong", "disagreement", "computational")
FLAGS = (*BOOL_FLAGS, "difficulty")
_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
UNPARSEABLE_POLICIES = ("drop", "keep")


def _last_object(text: str) -> str | None:
    """The last balanced ``{...}`` in ``text`` (braces inside JSON strings included)."""
    end = text.rfind("}")
    while end >= 0:
        depth = 0
        for i in range(end, -1, -1):
            depth += {"}": 1, "{": -1}.get(text[i], 0)
            if depth == 0:
                return text[i:end + 1]
        end = text.rfind("}", 0, end)
    return None


def parse_flags(reply: str) -> tuple[dict[str, Any] | None, str | None]:
    """(flags, None) or (None, why it is unparseable)."""
    text = reply[reply.rfind(THINK_END) + len(THINK_END):] if THINK_END in reply else reply
    fences = _FENCE.findall(text)
    raw = fences[-1] if fences else _last_object(text)
    if raw is None:
        return None, "no JSON object in the reply"
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg})"
    if not isinstance(obj, dict):
        return None, "the JSON is not an object"
    if missing := [k for k in FLAGS if k not in obj]:
        return None, f"missing keys {missing}"
    if bad := [k for k in BOOL_FLAGS if not isinstance(obj[k], bool)]:
        return None, f"keys {bad} are not true/false"
    d = obj["difficulty"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d != int(d) or not 1 <= d <= 10:
        return None, f"difficulty {d!r} is not an integer from 1 to 10"
    return {**{k: obj[k] for k in BOOL_FLAGS}, "difficulty": int(d)}, None


@dataclass(frozen=True)
class KeepRule:
    """Which classified problems to keep (reference: drop computational ones; the
    released code leaves the rest to the user).

    Args:
        drop_flags: A problem with any of these flags true is dropped (under that flag's name).
        min_difficulty: Drop problems rated below this (None: no floor).
        max_difficulty: Drop problems rated above this (None: no ceiling).
        on_unparseable: ``drop`` or ``keep`` a problem whose classifier reply could not
            be read (counted as ``unparseable`` either way).
    """

    drop_flags: tuple[str, ...] = ("incomplete", "wrong", "disagreement", "computational")
    min_difficulty: int | None = None
    max_difficulty: int | None = None
    on_unparseable: str = "drop"

    def __post_init__(self) -> None:
        if bad := [f for f in self.drop_flags if f not in BOOL_FLAGS]:
            raise ValueError(f"keep.drop_flags has unknown flags {bad} (known: {', '.join(BOOL_FLAGS)})")
        if self.on_unparseable not in UNPARSEABLE_POLICIES:
            raise ValueError(f"keep.on_unparseable must be one of {UNPARSEABLE_POLICIES}, got {self.on_unparseable!r}")

    def reasons(self, flags: dict[str, Any] | None) -> list[str]:
        """Why a problem is dropped (empty: kept)."""
        if flags is None:
            return ["unparseable"] if self.on_unparseable == "drop" else []
        out = [f for f in self.drop_flags if flags[f]]
        if self.min_difficulty is not None and flags["difficulty"] < self.min_difficulty:
            out.append("too_easy")
        if self.max_difficulty is not None and flags["difficulty"] > self.max_difficulty:
            out.append("too_hard")
        return out
