"""One cell of a source row, read as the type a loader needs: text, an id, a finite
number. A value of another type is a bad row (``BadRowError``) naming the row, the
column and what was expected; nothing is turned into text with ``str()`` behind the
user's back (a rubric given as a list is not the text "['a', 'b']")."""
from __future__ import annotations

import math
from typing import Any

from qed_lightning.data.bad_rows import BadRowError
from qed_lightning.data.sources import SourceRow

__all__ = ["MISSING", "id_cell", "number_cell", "raw_cell", "text_cell"]

MISSING = object()  # an absent column, as opposed to a null value
_SCHEMA_KEYS = {"title", "points", "desc"}


def _label(column: str, field: str | None) -> str:
    return f"{field} column {column!r}" if field else f"column {column!r}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return "blank" if isinstance(value, str) else type(value).__name__


def _is_empty(value: Any) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def raw_cell(row: SourceRow, column: str, *, required: bool, field: str | None = None, why: str = "") -> Any:
    """The row's value in ``column``; ``MISSING`` when the row lacks the column and
    it is optional. Raises ``BadRowError`` for a needed column the row lacks."""
    if column in row.values:
        return row.values[column]
    if required:
        has = ", ".join(repr(c) for c in row.values if c is not None)
        raise BadRowError(row.origin, "missing_column",
                          f"{_label(column, field)} is missing{why} (the row has: {has})", column)
    return MISSING


def _render_schema(items: list[Any]) -> str:
    # QED-Nano's parse_schema(): a list of {title, points, desc} checkpoints as markdown.
    return "\n".join(f"# {i['title']} ({i['points']} points)\nDescription: {i['desc']}" for i in items)


def _is_schema(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(i, dict) and _SCHEMA_KEYS <= set(i) for i in value)


def text_cell(
    row: SourceRow,
    column: str,
    *,
    required: bool,
    field: str | None = None,
    why: str = "",
    numbers: bool = False,
    schema: bool = False,
    blank_ok: bool = False,
) -> str | None:
    """A text cell.

    Args:
        row: The row.
        column: Its column name.
        required: An absent, null, NaN or blank value is a bad row; else it reads as None.
        field: What the column holds, for messages (``rubric``); None names the column only.
        why: Appended to a "missing"/"empty" message (`` (judge template 'x' needs it)``).
        numbers: Accept an int or finite float as its text (short answers, levels).
        schema: Accept a rubric as QED-Nano's list of ``{title, points, desc}``
            checkpoints, rendered as markdown the way its ``parse_schema`` does.
        blank_ok: A required value may be a blank string (a proof the judge scores 0).

    Returns:
        The text, or None for an optional empty cell.

    Raises:
        BadRowError: ``missing_column``, ``empty`` or ``wrong_type``, naming the row and column.
    """
    value = raw_cell(row, column, required=required, field=field, why=why)
    if value is MISSING:
        return None
    label = _label(column, field)
    if isinstance(value, str) and blank_ok:
        return value
    if _is_empty(value):
        if required:
            raise BadRowError(row.origin, "empty", f"{label} is empty ({_kind(value)}){why}; expected text", column)
        return None
    if isinstance(value, str):
        return value
    if schema and _is_schema(value):
        return _render_schema(value)
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    expected = "text" + (" or a number" if numbers else "") + (
        " or a list of {title, points, desc} checkpoints" if schema else "")
    raise BadRowError(row.origin, "wrong_type",
                      f"{label} holds {_a(value)} ({_preview(value)}); expected {expected}", column)


def id_cell(row: SourceRow, column: str, *, field: str | None = None) -> str:
    """A required id: text, or an integer (JSON and Parquet ids often are)."""
    value = raw_cell(row, column, required=True, field=field)
    label = _label(column, field)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if _is_empty(value):
        raise BadRowError(row.origin, "empty", f"{label} is empty ({_kind(value)}); expected an id", column)
    if isinstance(value, str):
        return value.strip()
    raise BadRowError(row.origin, "wrong_type",
                      f"{label} holds {_a(value)} ({_preview(value)}); expected text or an integer",
                      column)


def number_cell(row: SourceRow, column: str, *, why: str = "") -> float:
    """A required finite number (a CSV cell's text is parsed: CSV has no types)."""
    value = raw_cell(row, column, required=True, why=why)
    label = _label(column, None)
    if isinstance(value, str) and value.strip():
        try:
            number = float(value)
        except ValueError:
            raise BadRowError(row.origin, "wrong_type", f"{label} is {_preview(value)}{why}; expected a number",
                              column) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif _is_empty(value):
        raise BadRowError(row.origin, "empty", f"{label} is empty ({_kind(value)}){why}; expected a number", column)
    else:
        raise BadRowError(row.origin, "wrong_type",
                          f"{label} holds {_a(value)} ({_preview(value)}){why}; expected a number", column)
    if not math.isfinite(number):
        raise BadRowError(row.origin, "not_finite", f"{label} is {number}{why}; expected a finite number", column)
    return number
