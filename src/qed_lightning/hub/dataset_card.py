"""The dataset card of a ``qed data`` output folder: ``README.md`` in the hub's
dataset-card format (YAML metadata, then markdown), written beside the step's files
every time the step writes its ``summary.json``.

The metadata lists each JSONL data file of the folder as a hub ``config`` (so
``load_dataset(<repo>, "<name>")`` finds it), its size category and tags; the body says
which step made it, its settings, its counts (kept, dropped per reason, failed calls,
tokens), the columns of each file, and the ``qed`` version and git commit. Text goes
through ``redact.scrub``: the value of a credential-named environment variable never
reaches the card.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from qed_lightning.hub.redact import redact_settings, scrub

__all__ = ["DATASET_CARD_FILE", "dataset_metadata", "write_dataset_card"]

DATASET_CARD_FILE = "README.md"
# What each step's output is for, in the card's first line.
STEP_TEXT = {
    "distill": "teacher proofs distilled per problem (FineProofs-SFT columns)",
    "rubrics": "7-point marking schemes written per problem",
    "filter": "problems kept by an LLM classifier's flags",
    "difficulty": "problems with graded rollouts of a policy (FineProofs-RL difficulty columns)",
    "decontaminate": "a training set with benchmark overlaps removed",
}
# Files of an output folder that are bookkeeping, not data.
NOT_DATA = {"requests.jsonl", "removed.jsonl"}


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "n>1M"


def _data_files(folder: Path) -> list[tuple[Path, int, list[str]]]:
    """(file, rows, columns of its first row) of each JSONL data file."""
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        if path.name in NOT_DATA:
            continue
        rows, columns = 0, []
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                if rows == 0:
                    try:
                        columns = list(json.loads(line))
                    except json.JSONDecodeError:
                        columns = []
                rows += 1
        out.append((path, rows, columns))
    return out


def dataset_metadata(command: str, files: list[tuple[Path, int, list[str]]]) -> dict[str, Any]:
    rows = sum(n for _, n, _ in files)
    return {
        "tags": ["qed-lightning", f"qed-data-{command}", "mathematics", "proofs"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(rows)],
        "configs": [{"config_name": path.stem, "data_files": path.name} for path, _, _ in files],
    }


def _version() -> tuple[str, dict]:
    from qed_lightning import __version__
    from qed_lightning.callbacks.run_metadata import git_commit

    return __version__, git_commit(Path(__file__).resolve().parent)


def write_dataset_card(folder: str | Path, summary: Mapping[str, Any]) -> Path:
    """Writes ``README.md`` in ``folder`` from its data files and the step's ``summary``
    (``data_pipeline.summary.Summary.as_dict()``); returns its path."""
    import yaml

    folder = Path(folder)
    command = str(summary.get("command", "data"))
    files = _data_files(folder)
    version, git = _version()
    counts = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines = ["---", yaml.safe_dump(dataset_metadata(command, files), sort_keys=False).strip(), "---", "",
             f"# {folder.name}: {STEP_TEXT.get(command, command)}", "",
             f"Made by `qed data {command}` (qed_lightning {version}, git commit {git.get('commit') or 'unknown'}"
             + (", with uncommitted changes" if git.get("dirty") else "") + ").", "", "## Files", "",
             "| file | rows | columns |", "|---|---|---|"]
    lines += [f"| `{p.name}` | {n} | {', '.join(f'`{c}`' for c in cols) or '–'} |" for p, n, cols in files]
    lines += ["", "## Counts", "", "| count | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    dropped = summary.get("dropped") or {}
    if dropped:
        lines += ["", "Dropped, by reason: " + ", ".join(f"{k} {v}" for k, v in dropped.items()) + "."]
    rest = {k: v for k, v in summary.items() if k not in counts and k not in ("command", "dropped")}
    if rest:
        lines += ["", "## Settings and details", "", "```json",
                  json.dumps(redact_settings(rest), indent=1, ensure_ascii=False, sort_keys=True, default=str), "```"]
    lines += ["", "Every number here was counted by this run of the step (`summary.json` holds the same counts)."]
    path = folder / DATASET_CARD_FILE
    path.write_text(scrub("\n".join(lines) + "\n"), encoding="utf-8")
    return path
