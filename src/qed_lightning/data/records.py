"""Turning source rows into SFT examples: a column mapping, type checks that name
the row, and a policy for bad rows (raise, or skip and count)."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from qed_lightning.data.rendering import SFTExample
from qed_lightning.data.sources import DataSourceError, SourceRow

log = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class SFTColumns:
    """Which columns hold what. ``reasoning`` may be None for data without traces.

    Args:
        problem: Column with the problem statement (the user turn).
        response: Column with the final answer/proof (after the reasoning).
        reasoning: Column with the chain of thought, or None.
        id: Column with a row id, or None to use the row position.
    """

    problem: str = "problem"
    response: str = "proof"
    reasoning: str | None = "reasoning_content"
    id: str | None = None


@dataclass
class ConversionReport:
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


def _text_field(row: SourceRow, column: str, *, required: bool) -> str | None:
    if column not in row.values:
        if required:
            raise DataSourceError(
                f"{row.origin}: missing column {column!r} (columns: {sorted(row.values)})"
            )
        return None
    value = row.values[column]
    if value is None or (isinstance(value, float) and value != value):  # None / NaN from CSV or parquet
        if required:
            raise DataSourceError(f"{row.origin}: column {column!r} is empty")
        return None
    if not isinstance(value, str):
        raise DataSourceError(f"{row.origin}: column {column!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataSourceError(f"{row.origin}: column {column!r} is empty")
    return value


def row_to_sft_example(
    row: SourceRow, columns: SFTColumns, prompt_template: str = "{problem}", system_prompt: str | None = None
) -> SFTExample:
    problem = _text_field(row, columns.problem, required=True)
    response = _text_field(row, columns.response, required=True)
    reasoning = _text_field(row, columns.reasoning, required=False) if columns.reasoning else None
    row_id = str(row.values[columns.id]) if columns.id and columns.id in row.values else row.origin
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt_template.format(problem=problem)})
    return SFTExample(id=row_id, prompt_messages=messages, reasoning=reasoning, response=response)


def rows_to_sft_examples(
    rows: Iterable[SourceRow],
    columns: SFTColumns,
    *,
    prompt_template: str = "{problem}",
    system_prompt: str | None = None,
    on_bad_row: str = "error",
) -> tuple[list[SFTExample], ConversionReport]:
    """Convert every row; a bad row raises (naming it) or is skipped and counted."""
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    if "{problem}" not in prompt_template:
        raise ValueError(f"prompt_template must contain '{{problem}}', got {prompt_template!r}")
    report = ConversionReport()
    examples = []
    for row in rows:
        try:
            examples.append(row_to_sft_example(row, columns, prompt_template, system_prompt))
            report.kept += 1
        except DataSourceError as err:
            if on_bad_row == "error":
                raise
            report.skipped[str(err).split(": ", 1)[-1]] += 1
            log.warning("skipping bad row: %s", err)
    if not examples:
        raise DataSourceError(
            f"no usable SFT rows ({report.total_skipped} skipped: {dict(report.skipped)})"
            if report.total_skipped else "the dataset is empty"
        )
    return examples, report

