"""One policy for the rows a loader cannot use, shared by every loader: SFT data, RL
problems, evaluation benchmarks and ``qed judge`` input.

``on_bad_row: error`` stops at the first bad row, naming its file, row and column and
what was expected there. ``on_bad_row: skip`` leaves it out, counts it under its
reason (``REASONS``), logs the first few rows of each reason, and keeps the counts for
the run's metrics and reports. Problems with a whole file (missing, empty, not
parseable at all) are errors under both settings.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from qed_lightning.errors import QedUserError

__all__ = ["BAD_ROW_POLICIES", "REASONS", "BadRowError", "BadRows", "DataSourceError", "check_policy"]

log = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("error", "skip")

# reason -> what a row counted under it is; the keys are the metric and report names
REASONS = {
    "invalid_json": "not valid JSON (a line cut short, or not UTF-8)",
    "not_an_object": "a JSON value that is not an object",
    "wrong_field_count": "a CSV row with more or fewer fields than the header",
    "missing_column": "a column the loader needs is absent",
    "empty": "a needed value is null, NaN or blank",
    "wrong_type": "a value of the wrong type (a list where text is expected...)",
    "not_finite": "a NaN or infinite number",
    "judge_needs": "lacks a field the judge template fills in",
    "does_not_render": "does not render through the chat template",
}


class DataSourceError(QedUserError, ValueError):
    """A file or row that cannot be used, with where it is."""


class BadRowError(DataSourceError):
    """One row that cannot be used.

    Args:
        origin: Where the row is: ``file.jsonl:12`` (file and line), ``file.parquet row 3``,
            ``hub-id[split]#12`` (index in the split).
        reason: A ``REASONS`` key: what the row is counted under when skipped.
        detail: What is wrong and what was expected, starting with the column when
            there is one (``column 'rubric' is a list; expected text``).
        column: The column at fault, or None for the row as a whole.
    """

    def __init__(self, origin: str, reason: str, detail: str, column: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown bad-row reason {reason!r} (known: {', '.join(REASONS)})")
        super().__init__(f"{origin}: {detail}")
        self.origin, self.reason, self.detail, self.column = origin, reason, detail, column


def check_policy(on_bad_row: Any) -> str:
    """Returns ``on_bad_row`` if it is a policy; raises naming the setting otherwise."""
    if on_bad_row == "raise":  # evaluation's former name for it
        raise ValueError("on_bad_row: 'raise' is now called 'error' (set on_bad_row: error)")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    return on_bad_row


class BadRows:
    """Applies one ``on_bad_row`` policy to the bad rows of one source, and counts them.

    Args:
        policy: ``error`` (raise the first, with a hint at ``skip``) or ``skip``.
        source: The file or dataset the rows come from, for messages.
        log_first: Skipped rows logged per reason (the rest are only counted).
    """

    def __init__(self, policy: str = "error", source: str = "", log_first: int = 3) -> None:
        self.policy = check_policy(policy)
        self.source = source
        self.log_first = log_first
        self.counts: Counter[str] = Counter()
        self.first: dict[str, list[str]] = {}  # reason -> the first rows' messages

    def add(self, err: BadRowError) -> None:
        """Raises ``err`` under ``error``; counts and (the first few) logs it under ``skip``."""
        if self.policy == "error":
            raise BadRowError(err.origin, err.reason,
                              f"{err.detail} (on_bad_row: skip would leave such rows out and count them)",
                              err.column) from None
        self.counts[err.reason] += 1
        shown = self.first.setdefault(err.reason, [])
        if len(shown) < self.log_first:
            shown.append(str(err))
            log.warning("skipping bad row (%s): %s", err.reason, err)
        elif self.counts[err.reason] == self.log_first + 1:
            log.warning("%s: more rows skipped as %s; only counted from here on", self.source, err.reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """``"3 bad rows skipped (empty: 2, invalid_json: 1)"``, or ``"no bad rows"``."""
        if not self.total:
            return "no bad rows"
        return f"{self.total} bad rows skipped ({', '.join(f'{r}: {n}' for r, n in sorted(self.counts.items()))})"

    def metrics(self, prefix: str = "data/") -> dict[str, float]:
        """``{prefix}skipped_rows`` and one ``{prefix}skipped/<reason>`` per reason seen."""
        out = {f"{prefix}skipped_rows": float(self.total)}
        out.update({f"{prefix}skipped/{reason}": float(n) for reason, n in sorted(self.counts.items())})
        return out

    def log_to(self, trainer: Any, prefix: str = "data/") -> None:
        """Sends :meth:`metrics` to the trainer's loggers (at step 0) when rows may be skipped."""
        if self.policy != "skip" or trainer is None:
            return
        for logger in getattr(trainer, "loggers", []):
            logger.log_metrics(self.metrics(prefix), step=0)

    def nothing_left(self, what: str) -> DataSourceError:
        """The error for a source none of whose rows could be used."""
        first = "; ".join(msgs[0] for _, msgs in sorted(self.first.items()))
        if not self.total:
            return DataSourceError(f"{self.source or 'the source'}: no usable {what}")
        return DataSourceError(f"{self.source or 'the source'}: no usable {what}: {self.describe()}; "
                               f"first of each: {first}")
