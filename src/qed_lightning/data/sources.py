"""Where rows come from: a hub dataset (id, config, revision, split), a local JSONL,
JSON, CSV or Parquet file, or a dataset the package ships (``demo``). Rows come back
as plain dicts with their origin, so every later error can name the file and row."""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

SHIPPED = {"demo": Path(__file__).parent / "demo" / "proofs.jsonl"}
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DataSourceError(ValueError):
    """A row or file that cannot be used, with where it is."""


@dataclass(frozen=True)
class SourceRow:
    origin: str  # "file.jsonl:12" or "hub-id[split]#12": what an error message names
    index: int
    values: dict[str, Any]


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataSourceError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(value, dict):
                raise DataSourceError(f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}")
            yield lineno, value


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise DataSourceError(f"{path}: expected a JSON list of objects")
    yield from enumerate(data)


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as f:
        # Line 1 is the header, so the first record is line 2 (as a spreadsheet shows it).
        for index, row in enumerate(csv.DictReader(f), start=2):
            yield index, dict(row)


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    yield from enumerate(pq.read_table(path).to_pylist())


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def iter_local(path: str | Path) -> Iterator[SourceRow]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataSourceError(f"data file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataSourceError(f"{path}: unsupported file type (use one of {', '.join(LOCAL_SUFFIXES)})")
    for index, values in reader(path):
        yield SourceRow(origin=f"{path.name}:{index}", index=index, values=values)


def iter_hub(
    name: str, *, config_name: str | None = None, split: str = "train", revision: str | None = None
) -> Iterator[SourceRow]:
    from datasets import load_dataset

    dataset = load_dataset(name, config_name, split=split, revision=revision)
    for index, values in enumerate(dataset):
        yield SourceRow(origin=f"{name}[{split}]#{index}", index=index, values=dict(values))


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
