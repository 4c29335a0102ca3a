"""Every finished scaffold call, kept so a rerun replays instead of regenerating.

``scaffold_calls.jsonl`` in the evaluation's folder holds one line per call, keyed by
(problem, sample, stage, slot) and stamped with a digest of the conversation sent: a
rerun replays a stored reply only for the very same request (another prompt wording or
another earlier reply changes the digest, and the call runs again). Lines are appended
after each batched stage, so a run killed mid-stage loses that stage only. A line cut
by a crash is ignored. Calls that failed are not stored: a rerun tries them again.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Iterable

from qed_lightning.scaffolds.base import Reply

__all__ = ["CallKey", "CallStore"]

log = logging.getLogger(__name__)
CallKey = tuple[str, int, str, int]  # (problem_id, sample, stage, slot)


class CallStore:
    """Args:
        path: The JSONL file (None: keep calls in memory only).
        scaffold: The scaffold's name and settings, as one string: lines of another
            scaffold configuration in the same file are not replayed.
    """

    def __init__(self, path: str | Path | None, scaffold: str) -> None:
        self.path = None if path is None else Path(path)
        self.scaffold = scaffold
        self._rows: dict[CallKey, tuple[str, Reply]] = {}
        self._lock = threading.Lock()  # the per-problem schedule stores from several threads
        if self.path is not None and self.path.exists():
            for lineno, line in enumerate(self.path.read_text("utf-8").splitlines(), 1):
                try:
                    row = json.loads(line)
                    if row["scaffold"] != scaffold:
                        continue
                    key = (row["problem_id"], int(row["sample"]), row["stage"], int(row["slot"]))
                    self._rows[key] = (row["digest"], Reply.from_dict(row["reply"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.warning("%s:%d: unreadable line (cut by a crash?): its call runs again", self.path, lineno)

    def get(self, key: CallKey, digest: str) -> Reply | None:
        found = self._rows.get(key)
        return found[1] if found is not None and found[0] == digest else None

    def put(self, entries: Iterable[tuple[CallKey, str, Reply]]) -> None:
        lines = []
        with self._lock:
            for key, digest, reply in entries:
                if reply.error is not None and not reply.skipped:
                    continue  # a failure is retried on the next run, never replayed as data
                self._rows[key] = (digest, reply)
                lines.append(json.dumps(self._row(key, digest, reply), ensure_ascii=False))
            if lines and self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                    f.flush()

    def _row(self, key: CallKey, digest: str, reply: Reply) -> dict[str, Any]:
        problem_id, sample, stage, slot = key
        return dict(scaffold=self.scaffold, problem_id=problem_id, sample=sample, stage=stage, slot=slot,
                    digest=digest, reply=reply.to_dict())

    def __len__(self) -> int:
        return len(self._rows)
