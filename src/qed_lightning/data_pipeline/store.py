"""Append-only JSONL of per-request results: what makes every ``qed data`` command
resumable.

Each finished request is one line, written and flushed as soon as it finishes, keyed
by a string (``<problem id>#<request index>``...). On a rerun the newest line of a key
is the one that counts: a success is never asked again, a recorded failure is asked
again, and a line cut by a kill mid-write is ignored (that request is simply asked
again). So a run killed at any point loses no finished request and repeats none.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ResultStore"]


class ResultStore:
    """``key -> newest row`` over ``path``; :meth:`append` adds rows.

    Args:
        path: The JSONL file (created with its directory when absent).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict[str, Any]] = {}
        self.cut_lines = 0  # lines a kill left unreadable (their requests are redone)
        if self.path.exists():
            with self.path.open("rb") as f:
                for raw in f:
                    if not raw.strip():
                        continue
                    try:
                        row = json.loads(raw)
                        self.rows[str(row["key"])] = row
                    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                        self.cut_lines += 1
            self._heal()
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def _heal(self) -> None:
        # A kill mid-write leaves a last line without its newline; the next append must
        # start on a line of its own or it would be glued to the fragment.
        with self.path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return
            f.seek(-1, 2)
            ends_clean = f.read(1) == b"\n"
        if not ends_clean:
            with self.path.open("ab") as f:
                f.write(b"\n")

    def done(self, key: str) -> bool:
        """Whether ``key`` has a successful row (one without ``error``)."""
        row = self.rows.get(key)
        return row is not None and row.get("error") is None

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def append(self, row: dict[str, Any]) -> None:
        """Writes one row (it must have ``key``) and flushes it: a kill after this
        returns keeps it."""
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            self.rows[str(row["key"])] = row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
