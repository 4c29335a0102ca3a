"""The summary every ``qed data`` command writes: counts (kept, dropped per reason,
failed calls, tokens) as one JSON file beside the outputs."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Summary", "write_jsonl", "write_json"]


def write_json(path: str | Path, obj: Any) -> Path:
    """Writes ``obj`` to ``path`` through a temporary file: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Writes rows as JSONL through a temporary file; returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


class Summary:
    """Counts of one command run. ``dropped`` is per reason; ``extra`` holds anything
    else worth reporting (settings, cost estimates)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, **dict(sorted(self.counts.items())),
                "dropped": dict(sorted(self.dropped.items())), **self.extra}

    def write(self, output_dir: str | Path, push_to_hub: str | None = None) -> Path:
        """``summary.json`` and the folder's dataset card (``hub.dataset_card``); then the
        folder's upload to the dataset repo ``push_to_hub`` when set."""
        from qed_lightning.data_pipeline.push import push_output
        from qed_lightning.hub.dataset_card import write_dataset_card

        path = write_json(Path(output_dir) / "summary.json", self.as_dict())
        write_dataset_card(output_dir, self.as_dict())
        push_output(output_dir, push_to_hub)
        print(json.dumps(self.as_dict(), indent=1, ensure_ascii=False, sort_keys=True), flush=True)
        return path
