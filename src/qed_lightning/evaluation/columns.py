"""Column mapping for benchmark files: which source column holds each ``Problem``
field. A mapping value is one column name or a tuple of alternatives (the first one
the source has wins), so one spec reads both a benchmark's public CSV
(``Problem ID``, ``Grading guidelines``) and its hub copy (``problem_id``...).
Reading a cell as its type is ``data/cells.py``'s job, shared with the other loaders."""
from __future__ import annotations

from typing import Mapping, Sequence, Union

from qed_lightning.data.sources import DataSourceError

__all__ = ["FIELDS", "METADATA_FIELDS", "Names", "merge_columns", "resolve_columns"]

Names = Union[str, tuple[str, ...]]
# Problem fields first, then the ones that go to Problem.metadata.
METADATA_FIELDS = ("category", "level", "short_answer", "source", "subcategory")
FIELDS = ("problem", "id", "rubric", "reference_solution") + METADATA_FIELDS


def merge_columns(defaults: Mapping[str, Names], user: Mapping[str, Names | None] | None) -> dict[str, Names]:
    """The spec's mapping with the user's on top; a user value of None unmaps a field."""
    merged = dict(defaults)
    for field, names in (user or {}).items():
        if field not in FIELDS:
            raise ValueError(f"unknown field {field!r} in the column mapping (fields: {', '.join(FIELDS)})")
        if names is None:
            merged.pop(field, None)
        else:
            merged[field] = names if isinstance(names, str) else tuple(names)
    return merged


def resolve_columns(
    mapping: Mapping[str, Names], available: Sequence[str], where: str, lenient: Sequence[str] = ()
) -> dict[str, str]:
    """field -> the one column it reads in a source with columns ``available``.

    A field none of whose names exists is an error listing the columns there are,
    except for the ``lenient`` fields (a spec's optional metadata guesses), which are
    left out and returned in nothing: their values are simply absent.
    """
    resolved, missing = {}, []
    for field, names in mapping.items():
        options = (names,) if isinstance(names, str) else tuple(names)
        found = next((c for c in options if c in available), None)
        if found is not None:
            resolved[field] = found
        elif field not in lenient:
            missing.append(f"{field}={' or '.join(repr(c) for c in options)}")
    if missing:
        raise DataSourceError(
            f"{where}: column mapping names columns the source does not have: {', '.join(missing)} "
            f"(columns: {', '.join(repr(c) for c in available)})"
        )
    return resolved
