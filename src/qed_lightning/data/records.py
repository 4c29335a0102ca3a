"""Turning source rows into SFT examples: a column mapping, typed reads that name the
row and column, and the ``on_bad_row`` policy (``bad_rows.py``) for rows that do not fit.

Reasoning that is null, missing from a row, empty or only whitespace is *empty
reasoning*, not a bad row: the example trains the proof after an empty think block
(see ``rendering.py`` for how that block meets the prompt at a token boundary). A
reasoning column that no row has at all is an error (a misspelt column name would
otherwise train every proof without its reasoning).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from qed_lightning.data.bad_rows import BadRowError, BadRows, DataSourceError
from qed_lightning.data.cells import MISSING, id_cell, raw_cell, text_cell
from qed_lightning.data.rendering import SFTExample
from qed_lightning.data.sources import SourceRow

__all__ = ["ConversionReport", "SFTColumns", "row_to_sft_example", "rows_to_sft_examples"]

log = logging.getLogger(__name__)


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
    """What ``rows_to_sft_examples`` did: rows kept, rows skipped (by reason, in
    ``bad_rows``), and kept rows whose reasoning was empty."""

    kept: int = 0
    bad_rows: BadRows = field(default_factory=BadRows)
    empty_reasoning: int = 0

    @property
    def skipped(self) -> Counter:
        return self.bad_rows.counts

    @property
    def total_skipped(self) -> int:
        return self.bad_rows.total


def row_to_sft_example(
    row: SourceRow, columns: SFTColumns, prompt_template: str = "{problem}", system_prompt: str | None = None
) -> SFTExample:
    """One row as an example; raises ``BadRowError`` naming the row and column."""
    row.check()
    problem = text_cell(row, columns.problem, required=True)
    response = text_cell(row, columns.response, required=True)
    reasoning = None
    if columns.reasoning:
        reasoning = text_cell(row, columns.reasoning, required=False) or ""
    row_id = id_cell(row, columns.id) if columns.id else row.origin
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt_template.format(problem=problem)})
    return SFTExample(id=row_id, prompt_messages=messages, reasoning=reasoning, response=response, origin=row.origin)


def rows_to_sft_examples(
    rows: Iterable[SourceRow],
    columns: SFTColumns,
    *,
    prompt_template: str = "{problem}",
    system_prompt: str | None = None,
    on_bad_row: str = "error",
    bad_rows: BadRows | None = None,
) -> tuple[list[SFTExample], ConversionReport]:
    """Converts every row; a bad row raises (naming it) or is skipped and counted.

    Args:
        rows: Source rows.
        columns: The column mapping.
        prompt_template: The user turn; ``{problem}`` is replaced by the statement.
        system_prompt: Optional system turn.
        on_bad_row: ``error`` or ``skip`` (ignored when ``bad_rows`` is given).
        bad_rows: The policy and counts to use, shared with later stages (rendering).

    Raises:
        DataSourceError: On a bad row under ``error``, when no row is usable, or when
            no row has the reasoning column.
    """
    bad = bad_rows if bad_rows is not None else BadRows(on_bad_row)
    if "{problem}" not in prompt_template:
        raise ValueError(f"prompt_template must contain '{{problem}}', got {prompt_template!r}")
    report = ConversionReport(bad_rows=bad)
    examples, rows_seen, reasoning_seen = [], 0, False
    for row in rows:
        rows_seen += 1
        bad.source = bad.source or row.source
        if columns.reasoning and not reasoning_seen and row.error is None:
            reasoning_seen = raw_cell(row, columns.reasoning, required=False) is not MISSING
        try:
            example = row_to_sft_example(row, columns, prompt_template, system_prompt)
        except BadRowError as err:
            bad.add(err)
            continue
        examples.append(example)
        report.kept += 1
        report.empty_reasoning += example.reasoning == ""
    if columns.reasoning and examples and not reasoning_seen:
        raise DataSourceError(
            f"{bad.source}: no row has the reasoning column {columns.reasoning!r} "
            "(set reasoning_column: null for data without reasoning, or name the column that holds it)")
    if not examples:
        raise bad.nothing_left("SFT rows")
    if report.empty_reasoning:
        log.info("%s: %d rows have empty reasoning; they train the proof after an empty think block",
                 bad.source, report.empty_reasoning)
    return examples, report
