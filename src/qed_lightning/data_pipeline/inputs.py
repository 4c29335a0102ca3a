"""The rows a ``qed data`` command works on: a file or hub dataset read with the
project's bad-row policy (``data/bad_rows.py``), each with a stable id and its text
cells checked. Rows keep every column, so outputs carry the input's columns along."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qed_lightning.data.bad_rows import BadRowError, BadRows, DataSourceError
from qed_lightning.data.cells import id_cell, text_cell
from qed_lightning.data.sources import iter_rows

__all__ = ["InputRow", "read_inputs"]


@dataclass
class InputRow:
    """One usable row: ``id`` (the id column's value, or ``row<index>``), its checked
    ``text`` cells by field, and every original column in ``values``."""

    id: str
    origin: str
    text: dict[str, str | None]
    values: dict[str, Any] = field(default_factory=dict)


def read_inputs(
    source: str,
    columns: dict[str, str | None],
    required: tuple[str, ...] = ("problem",),
    id_column: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    on_bad_row: str = "error",
) -> tuple[list[InputRow], BadRows]:
    """Reads every row of ``source``.

    Args:
        source: ``demo``, a local .jsonl/.json/.csv/.parquet file, or a hub dataset id.
        columns: Field -> column holding it (None: not used). Rubrics may be QED-Nano's
            list of checkpoints; they are read as its markdown.
        required: Fields a row must have (absent or empty: a bad row).
        id_column: Column with a row id, or None to name rows ``row<index>``.
        config_name, split, revision: Hub dataset selection.
        on_bad_row: ``error`` (stop at the first bad row, naming file, row and column) or
            ``skip`` (count it by reason).

    Raises:
        DataSourceError: A bad row under ``error``, a duplicate id, or no usable row.
    """
    bad = BadRows(on_bad_row, source)
    rows, seen = [], {}
    for row in iter_rows(source, config_name=config_name, split=split, revision=revision):
        try:
            row.check()
            pid = id_cell(row, id_column, field="id") if id_column else f"row{row.index}"
            text = {f: text_cell(row, c, required=f in required, field=f, schema=f == "rubric")
                    for f, c in columns.items() if c}
        except BadRowError as err:
            bad.add(err)
            continue
        if pid in seen:
            raise DataSourceError(f"{row.origin}: duplicate id {pid!r} (first at {seen[pid]}); ids key the "
                                  "resumable results, so this is an error under on_bad_row: skip too")
        seen[pid] = row.origin
        rows.append(InputRow(pid, row.origin, text, dict(row.values)))
    if not rows:
        raise bad.nothing_left("rows")
    if bad.total:
        print(f"{source}: {bad.describe()}", flush=True)
    return rows, bad
