"""Prompt templates with ``{name}`` placeholders, filled without ``str.format``.

Proofs and problems hold braces (TeX), which ``str.format`` breaks on; and a value that
happens to contain ``{problem}`` must never be expanded again. ``fill`` replaces every
placeholder it has a value for in one pass and leaves other braces alone.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

__all__ = ["fill", "load_template"]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced, in one pass, verbatim."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def load_template(path: str | None, default: str, required: Sequence[str], what: str) -> str:
    """The prompt in ``path`` (or ``default``), refused when it lacks a ``required``
    placeholder; ``what`` names the prompt in the error."""
    template = Path(path).read_text(encoding="utf-8") if path else default
    missing = [name for name in required if "{" + name + "}" not in template]
    if missing:
        raise ValueError(f"the {what} prompt ({path or 'built-in'}) needs " + " and ".join(f"{{{m}}}" for m in missing))
    return template
