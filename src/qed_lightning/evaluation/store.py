"""Resumable evaluation state: generations and graded records, appended as they finish.

``generations.jsonl`` holds each (problem, sample) generation as soon as its chunk is
generated; ``records.jsonl`` each graded ``EvalRecord``. A rerun of the same command
reads both, regenerates nothing that is there and regrades only what has no record, so
a crash at problem 41 resumes at 41. A line cut by a crash mid-write is ignored (its
item is simply done again).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from qed_lightning.evaluation.records import EvalRecord

__all__ = ["EvalStore"]

log = logging.getLogger(__name__)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable line (cut by a crash?): its item is done again", path, lineno)
    return rows


class EvalStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.generations_path = self.directory / "generations.jsonl"
        self.records_path = self.directory / "records.jsonl"
        self.generations: dict[tuple[str, int], dict[str, Any]] = {
            (g["problem_id"], int(g["sample"])): g for g in _read_jsonl(self.generations_path)}
        self.records: dict[tuple[str, int], EvalRecord] = {}
        for row in _read_jsonl(self.records_path):
            record = EvalRecord.from_dict(row)
            self.records[(record.problem_id, record.sample)] = record  # the newest line counts

    def add_generations(self, rows: list[dict[str, Any]]) -> None:
        with self.generations_path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.generations[(row["problem_id"], int(row["sample"]))] = row
            f.flush()

    def add_records(self, records: list[EvalRecord]) -> None:
        with self.records_path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(record.to_json() + "\n")
                self.records[(record.problem_id, record.sample)] = record
            f.flush()
