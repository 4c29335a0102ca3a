"""Where rows come from: a hub dataset (id, config, revision, split), a local JSONL,
JSON, CSV or Parquet file, or a dataset the package ships (``demo``). Rows come back
as plain dicts with their origin, so every later error can name the file and row.

A row the reader cannot parse (a JSONL line that is not JSON, a line cut short by
an interrupted write, a CSV row with more or fewer fields than the header) comes back
too, with its ``error`` set: it is a bad row like any other, for the loader's
``on_bad_row`` policy. A file with no rows, or one that cannot be read at all, is an
error naming the file.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from qed_lightning.data.bad_rows import BadRowError, DataSourceError

__all__ = ["BadRowError", "DataSourceError", "LOCAL_SUFFIXES", "SHIPPED", "SourceRow", "iter_rows"]

log = logging.getLogger(__name__)

SHIPPED = {"demo": Path(__file__).parent / "demo" / "proofs.jsonl"}
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class SourceRow:
    """One row.

    Args:
        origin: What an error message names: ``file.jsonl:12`` (line 12; for CSV the
            line the record starts on), ``file.parquet row 3`` (1-based), or
            ``hub-id[split]#12`` (the index in the split).
        index: Position used for ids of rows without an id column (kept stable).
        values: Column -> value; empty when ``error`` is set.
        error: Why the row could not be parsed, or None.
        source: The file (as given) or dataset id the row comes from.
    """

    origin: str
    index: int
    values: dict[str, Any]
    error: BadRowError | None = None
    source: str = ""

    def check(self) -> None:
        """Raises the row's parse error, if it has one."""
        if self.error is not None:
            raise self.error


class _Unparsed:
    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _read_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                # utf-8-sig: a byte-order mark some editors write is not part of the data
                value = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError as err:
                yield lineno, f":{lineno}", _Unparsed("invalid_json", f"not UTF-8 text ({err.reason})")
                continue
            except json.JSONDecodeError as err:
                cut = "" if raw.endswith(b"\n") else "; the file's last line is cut short (an interrupted write?)"
                what = err.msg.removesuffix(" starting at")
                yield lineno, f":{lineno}", _Unparsed("invalid_json", f"not valid JSON ({what}, column {err.pos + 1}){cut}")
                continue
            if not isinstance(value, dict):
                what = f"expected a JSON object, got {type(value).__name__}"
                yield lineno, f":{lineno}", _Unparsed("not_an_object", what)
                continue
            yield lineno, f":{lineno}", value


_SPACE = re.compile(r"\s*")


def _read_json(path: Path) -> Iterator[tuple[int, str, Any]]:
    """The objects of a JSON list, each with the line it starts on."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        return
    decoder = json.JSONDecoder()
    try:
        pos = _SPACE.match(text).end()
        if text[pos] != "[":
            raise DataSourceError(f"{path}: expected a JSON list of objects (for one object per line, use .jsonl)")
        pos = _SPACE.match(text, pos + 1).end()
        index, line, counted = 0, 1, 0
        while text[pos:pos + 1] != "]":
            value, end = decoder.raw_decode(text, pos)
            line, counted = line + text.count("\n", counted, pos), pos
            yield index, f":{line}", value if isinstance(value, dict) else _Unparsed(
                "not_an_object", f"expected a JSON object, got {type(value).__name__}")
            index += 1
            pos = _SPACE.match(text, end).end()
            if text[pos:pos + 1] == ",":
                pos = _SPACE.match(text, pos + 1).end()
            elif text[pos:pos + 1] != "]":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        if text[pos + 1:].strip():
            raise json.JSONDecodeError("Extra data", text, _SPACE.match(text, pos + 1).end())
    except json.JSONDecodeError as err:
        raise DataSourceError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno} ({err.msg}); "
                              "a .json file is read as a whole, so nothing of it can be used") from None


def _read_csv(path: Path) -> Iterator[tuple[int, str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        if twice := sorted({h for h in header if header.count(h) > 1}):
            raise DataSourceError(f"{path}: the header names {twice} more than once")
        end, index = reader.line_num, 1  # index: the record's row as a spreadsheet numbers it
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:
                continue
            index += 1
            if len(fields) != len(header):
                yield index, f":{start}", _Unparsed(
                    "wrong_field_count", f"the row has {len(fields)} fields but the header has {len(header)} "
                    "(an unbalanced quote or a missing separator?); its columns cannot be trusted")
                continue
            yield index, f":{start}", dict(zip(header, fields))


def _read_parquet(path: Path) -> Iterator[tuple[int, str, Any]]:
    import pyarrow.parquet as pq

    for index, values in enumerate(pq.read_table(path).to_pylist()):
        yield index, f" row {index + 1}", values


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def iter_local(path: str | Path) -> Iterator[SourceRow]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataSourceError(f"data file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataSourceError(f"{path}: unsupported file type (use one of {', '.join(LOCAL_SUFFIXES)})")
    rows = 0
    try:
        for index, where, values in reader(path):
            rows += 1
            origin = f"{path.name}{where}"
            if isinstance(values, _Unparsed):
                yield SourceRow(origin, index, {}, BadRowError(origin, values.reason, values.detail), str(path))
            else:
                yield SourceRow(origin, index, values, None, str(path))
    except UnicodeDecodeError as err:
        raise DataSourceError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataSourceError(f"{path}: not readable as CSV ({err})") from None
    if rows == 0:
        raise DataSourceError(f"{path}: the file has no rows")


def iter_hub(
    name: str, *, config_name: str | None = None, split: str = "train", revision: str | None = None
) -> Iterator[SourceRow]:
    from datasets import load_dataset

    dataset = load_dataset(name, config_name, split=split, revision=revision)
    if len(dataset) == 0:
        raise DataSourceError(f"{name} (config {config_name}, split {split}): the dataset has no rows")
    for index, values in enumerate(dataset):
        yield SourceRow(origin=f"{name}[{split}]#{index}", index=index, values=dict(values), source=name)


def iter_rows(
    source: str, *, config_name: str | None = None, split: str = "train", revision: str | None = None
) -> Iterator[SourceRow]:
    """Rows of a shipped dataset name, a local file, or a hub dataset id."""
    if source in SHIPPED:
        yield from iter_local(SHIPPED[source])
    elif source.lower().endswith(LOCAL_SUFFIXES) or Path(source).expanduser().exists():
        yield from iter_local(source)
    else:
        yield from iter_hub(source, config_name=config_name, split=split, revision=revision)
