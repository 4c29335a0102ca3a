"""Rollout records: what the model wrote, one JSONL per step, with bounded volume.

At 1,024 samples x 49k tokens a step the full text is ~200 MB per step; the settings
keep every n-th step, the first k groups, and cut text at m characters.
"""
from __future__ import annotations

import json
from pathlib import Path

from qed_lightning.rollouts.batch import RolloutBatch

__all__ = ["RolloutRecorder", "read_records"]


class RolloutRecorder:
    """Args:
        directory: Where ``step_000040.jsonl`` files go.
        every_n_steps: Record steps 0, n, 2n, ... (0 disables recording).
        max_groups: First k groups of a step (None: all).
        max_chars: Cut completion text at m characters (None: whole).
        rank: This rank under DDP (files ``step_000040.rank1.jsonl``: each rank records
            its own groups); None on one process.
    """

    def __init__(self, directory: str | Path, every_n_steps: int = 1, max_groups: int | None = None,
                 max_chars: int | None = 4000, rank: int | None = None) -> None:
        self.directory, self.rank = Path(directory), rank
        self.every_n_steps, self.max_groups, self.max_chars = every_n_steps, max_groups, max_chars
        self.last_rows: tuple[int, list[dict]] | None = None  # (step, rows) of the latest write

    def path(self, step: int) -> Path:
        tag = "" if self.rank is None else f".rank{self.rank}"
        return self.directory / f"step_{step:06d}{tag}.jsonl"

    def write(self, step: int, batch: RolloutBatch) -> Path | None:
        if not self.every_n_steps or step % self.every_n_steps:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(step)
        rows = []
        for i, (c, v) in enumerate(zip(batch.completions, batch.verdicts)):
            group = int(batch.group_ids[i])
            if self.max_groups is not None and group >= self.max_groups:
                continue
            text = c.text if self.max_chars is None else c.text[: self.max_chars]
            rows.append({
                "step": step, "problem_id": batch.problems[group].id, "group": group, "sample": i,
                "text": text, "text_chars": len(c.text), "completion_tokens": len(c.completion_ids),
                "finish_reason": c.finish_reason, "score": v.score, "reward": float(batch.rewards[i]),
                "verdict_error": v.error, "verdict_origin": v.origin, "verdict": v.raw[: self.max_chars or None],
                "weight_version": c.weight_version,
            })
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)  # a reader never sees half a step
        self.last_rows = (step, rows)
        return path


def read_records(directory: str | Path) -> list[dict]:
    """Every record of every ``step_*.jsonl`` under ``directory``, in step order."""
    rows = []
    for path in sorted(Path(directory).glob("step_*.jsonl")):
        rows += [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return rows
