"""A checker for 7-point marking schemes in the format ``qed data rubrics`` asks for.

A scheme has three sections: checkpoints, zero-credit items and deductions. Each
checkpoint line carries its points (``(3 pts)``, ``[2 points]``, ``- 1 point: ...``).
Checkpoints may split into alternative chains (a line starting ``Chain A``, ``Chain
B``...): a proof is scored on its best chain, so each chain, together with the
checkpoints listed before the first chain (common to all), must total exactly 7.
Heading lines and a closing ``Total: ...`` line are not checkpoints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from qed_lightning.judging.answer import THINK_END

__all__ = ["RubricCheck", "check_rubric", "clean_rubric"]

TOTAL = 7
_POINTS = re.compile(r"(?<![\w.])\+?(\d+(?:\.\d+)?)\s*(?:pts?|points?)\b", re.IGNORECASE)
_CHAIN = re.compile(r"^chain\s+([a-z0-9]+)\b", re.IGNORECASE)
_MARKUP = re.compile(r"^[\s#*_>\-|]+|[*_]+")


def _plain(line: str) -> str:
    return _MARKUP.sub("", line).strip().lower()


def _section(line: str) -> str | None:
    plain = re.sub(r"^[\d.()\s]+", "", _plain(line))
    if plain.startswith("checkpoint"):
        return "checkpoints"
    if plain.startswith(("zero-credit", "zero credit")):
        return "zero_credit"
    if plain.startswith("deduction"):
        return "deductions"
    return None


@dataclass(frozen=True)
class RubricCheck:
    """``ok`` when ``issues`` is empty; ``chains`` maps each chain (``main`` when
    there are none) to its total points."""

    chains: dict[str, float] = field(default_factory=dict)
    issues: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.issues


def clean_rubric(reply: str) -> str:
    """The scheme in a grader's reply: after its last ``</think>``, from the first
    checkpoints heading on (preamble dropped); the whole reply when there is none."""
    text = reply[reply.rfind(THINK_END) + len(THINK_END):] if THINK_END in reply else reply
    lines = text.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if _section(line) == "checkpoints"), 0)
    return "\n".join(lines[start:]).strip()


def check_rubric(text: str) -> RubricCheck:
    """Parses ``text`` and lists what breaks the format (see the module doc)."""
    section, seen = None, set()
    common, chains, current = 0.0, {}, None
    points_seen, issues = 0, []
    for line in text.splitlines():
        if (name := _section(line)) is not None:
            section = name
            seen.add(name)
            continue
        if section != "checkpoints" or not line.strip():
            continue
        plain = _plain(line)
        if (chain := _CHAIN.match(plain)) is not None:
            current = chain.group(1).upper()
            chains.setdefault(current, 0.0)
            continue
        if line.lstrip().startswith("#") or plain.startswith("total"):
            continue
        if (m := _POINTS.search(line)) is None:
            continue
        value = float(m.group(1))
        points_seen += 1
        if value != int(value):
            issues.append(f"non-integer points {m.group(1)!r} in: {line.strip()[:80]}")
        if current is None:
            common += value
        else:
            chains[current] += value
    for name, label in (("checkpoints", "checkpoints"), ("zero_credit", "zero-credit"), ("deductions", "deductions")):
        if name not in seen:
            issues.append(f"no {label} section")
    totals = {c: common + v for c, v in chains.items()} if chains else {"main": common}
    if "checkpoints" in seen and not points_seen:
        issues.append("no point values in the checkpoints")
    elif points_seen:
        issues += [f"chain {c} totals {t:g} points, not {TOTAL}" if c != "main" else
                   f"checkpoints total {t:g} points, not {TOTAL}" for c, t in totals.items() if t != TOTAL]
    return RubricCheck(totals, tuple(issues))
