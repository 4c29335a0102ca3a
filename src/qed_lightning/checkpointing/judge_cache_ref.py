"""The judge's verdict cache in a checkpoint: where it is, never its contents."""
from __future__ import annotations

__all__ = ["JudgeCacheReference"]


class JudgeCacheReference:
    """A checkpoint component recording the judge's ``cache_reference()``; on load the
    cache is found again through the judge's own settings."""

    def __init__(self, judge) -> None:
        self.judge = judge

    def state_dict(self) -> dict:
        return {"reference": self.judge.cache_reference()}

    def load_state_dict(self, state: dict) -> None:
        pass  # informational
