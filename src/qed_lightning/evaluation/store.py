"""Resumable evaluation state: generations and graded records, appended as they finish.

``generations.jsonl`` holds each (problem, sample) generation as soon as its chunk is
generated; ``records.jsonl`` each graded ``EvalRecord``. A rerun of the same command
reads both, regenerates nothing that is there and regrades only what has no record, so
a crash at problem 41 resumes at 41. A line cut by a crash mid-write is ignored (its
item is simply done again).

Records are kept per judge (``EvalRecord.judge``, the grader's model and prompt): once a
run selects its judge, ``records`` holds that judge's verdicts only, so a rerun with
another judge regrades every item instead of mixing two judges' verdicts into one
number; the earlier judge's records stay in the file (``other_judges``).
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
    """Args:
        directory: The run's folder (created if missing).
        judge: The label of the judge grading this run; None until ``select_judge``.
    """

    def __init__(self, directory: str | Path, judge: str | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.generations_path = self.directory / "generations.jsonl"
        self.records_path = self.directory / "records.jsonl"
        self.generations: dict[tuple[str, int], dict[str, Any]] = {
            (g["problem_id"], int(g["sample"])): g for g in _read_jsonl(self.generations_path)}
        self.judge = judge
        # judge -> (problem_id, sample) -> record; the newest line of a judge's item counts
        self.by_judge: dict[str, dict[tuple[str, int], EvalRecord]] = {}
        for row in _read_jsonl(self.records_path):
            record = EvalRecord.from_dict(row)
            self.by_judge.setdefault(record.judge, {})[(record.problem_id, record.sample)] = record

    def select_judge(self, judge: str) -> None:
        """From now on ``records`` are ``judge``'s: items another judge graded are to do."""
        self.judge = judge

    @property
    def records(self) -> dict[tuple[str, int], EvalRecord]:
        """(problem_id, sample) -> the selected judge's record. With no judge selected, the
        records of the only judge there is; raises when there are several."""
        if self.judge is not None:
            return self.by_judge.setdefault(self.judge, {})
        if len(self.by_judge) > 1:
            raise ValueError(f"{self.records_path} holds verdicts of {len(self.by_judge)} judges "
                             f"({', '.join(map(repr, self.by_judge))}): select one (select_judge)")
        return next(iter(self.by_judge.values()), {})

    def other_judges(self, keys: list[tuple[str, int]] | None = None) -> list[EvalRecord]:
        """Records of every judge but the selected one (of these (problem_id, sample) keys
        when given): for a report that shows them apart, never mixed."""
        wanted = None if keys is None else set(keys)
        return [r for judge, records in self.by_judge.items() if judge != self.judge
                for key, r in records.items() if wanted is None or key in wanted]

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
                self.by_judge.setdefault(record.judge, {})[(record.problem_id, record.sample)] = record
            f.flush()
