"""Content-addressed verdict store: identical gradings are paid for once.

Key: a hash of the template, the problem fields it uses, the graded answer and the
grader's settings (model, sampling). Only successful verdicts are stored: a timeout
or a server error is a fact about the infrastructure, not about the proof. One
SQLite file beside the run; checkpoints hold a reference to it (path and size), not
its contents, since a step's raw verdicts can be large.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from qed_lightning.contracts import Verdict

__all__ = ["VerdictCache", "cache_key"]

CACHE_FILENAME = "judge_cache.sqlite"


def cache_key(template_body: str, fields: dict[str, Any], answer: str, grader: dict[str, Any]) -> str:
    payload = json.dumps(
        {"template": template_body, "fields": fields, "answer": answer, "grader": grader},
        sort_keys=True, ensure_ascii=False, default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class VerdictCache:
    """``get(key)`` / ``put(key, verdict)`` over ``<directory>/judge_cache.sqlite``."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory).expanduser() / CACHE_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # WAL: several processes (ranks, an eval beside training) can read while one writes.
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, score INTEGER NOT NULL, raw TEXT NOT NULL)"
        )
        self._db.commit()

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            row = self._db.execute("SELECT score, raw FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else Verdict(score=row[0], raw=row[1], origin="cache")

    def put_many(self, entries: list[tuple[str, Verdict]]) -> None:
        rows = [(k, v.score, v.raw) for k, v in entries if v.ok and v.score is not None]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO verdicts (key, score, raw) VALUES (?, ?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def reference(self) -> dict[str, Any]:
        """What a checkpoint records about the cache."""
        return {"path": str(self.path), "entries": len(self)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
