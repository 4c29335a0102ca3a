"""Reading the model's decisions in scaffold replies: pairwise choices, scores, kept ids.

Every parser reads the reply's final answer (``Reply.answer``: after ``</think>``) with
the candidates it was shown removed first, so a verdict planted inside a candidate
proof and echoed back cannot decide; of the boxes left, the **last** one counts (the
model's conclusion). The released code takes the first box, and picks the second
candidate when a comparison is unparseable or tied; here an unparseable reply is a
``None`` the caller counts, and a tie is a tie the caller breaks by a seeded coin.
"""
from __future__ import annotations

import re
from typing import Sequence

from qed_lightning.evaluation.answer_check import _boxes

__all__ = ["boxed_contents", "drop_echoes", "parse_choice", "parse_keep_ids", "parse_score", "parse_tag"]

MIN_ECHO_CHARS = 40  # shorter candidate texts are too common to cut out of a reply safely


def drop_echoes(reply: str, shown: Sequence[str] = ()) -> str:
    """``reply`` with every verbatim copy of a shown candidate text cut out."""
    for text in sorted((t.strip() for t in shown), key=len, reverse=True):
        if len(text) >= MIN_ECHO_CHARS:
            reply = reply.replace(text, " ")
    return reply


def boxed_contents(reply: str) -> list[str]:
    """Contents of each ``\\boxed{...}`` (balanced braces), left to right, stripped."""
    return [reply[start:close].strip() for _, start, close in _boxes(reply)]


def _last_box(reply: str, shown: Sequence[str]) -> str | None:
    boxes = boxed_contents(drop_echoes(reply, shown))
    return boxes[-1] if boxes else None


def _unwrap(text: str) -> str:
    """``\\text{A}``, ``\\textbf{A}``, ``**A**`` and quotes -> ``A``."""
    text = re.sub(r"^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$", r"\1", text.strip())
    return text.strip().strip("*'\" ").strip()


def parse_choice(reply: str, labels: Sequence[str], shown: Sequence[str] = (),
                 tie_words: Sequence[str] = ("equal", "tie")) -> str | None:
    """The label chosen in the last box (``"A"``, ``"B"``...), ``"equal"`` for a tie,
    or None when there is no box or it holds something else."""
    box = _last_box(reply, shown)
    if box is None:
        return None
    value = _unwrap(box)
    for label in labels:
        if value.upper() == label.upper():
            return label
    if value.lower() in tie_words:
        return "equal"
    return None


def parse_score(reply: str, allowed: Sequence[float], shown: Sequence[str] = ()) -> float | None:
    """The number in the last box if it is one of ``allowed`` (e.g. 0, 0.5, 1 or 0..7),
    else None."""
    box = _last_box(reply, shown)
    if box is None:
        return None
    value = _unwrap(box)
    if value.endswith("/7"):
        value = value[:-2].strip()
    try:
        number = float(value)
    except ValueError:
        return None
    for a in allowed:
        if abs(number - a) < 1e-9:
            return a
    return None


def parse_tag(reply: str, tag: str, shown: Sequence[str] = ()) -> str | None:
    """The content of the last ``<tag>...</tag>``, stripped, or None."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", drop_echoes(reply, shown), flags=re.DOTALL)
    return found[-1].strip() if found else None


def parse_keep_ids(reply: str, valid: Sequence[int], shown: Sequence[str] = ()) -> list[int] | None:
    """Ids listed in the last ``<keep>[...]</keep>``, in order, duplicates dropped; None
    when the tag is missing, empty, or names an id not in ``valid``."""
    body = parse_tag(reply, "keep", shown)
    if body is None:
        return None
    ids = [int(x) for x in re.findall(r"-?\d+", body)]
    if not ids or any(i not in set(valid) for i in ids):
        return None
    return list(dict.fromkeys(ids))
