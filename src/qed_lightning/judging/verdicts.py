"""Reading a score out of a judge's reply.

Each verdict format is one entry in :data:`VERDICT_FORMATS` (name -> pattern and
the regex that constrains decoding to it). The parser reads only the judge's final
answer, drops any echo of the fenced proof, and takes the well-formed tag at the
position the template asks for (:data:`VERDICT_POSITIONS`; ``last`` unless the
template declares ``verdict_at: first``). Reading the end of a prompt that asks for
the verdict last means a judge that quotes the proof (and a score the proof pretends
to have) before giving its own verdict is still read correctly; reading the start of
one that asks for it first does the same for quotes after the verdict. No verdict, or
a score off the scale, is an error, never a number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

__all__ = [
    "VERDICT_FORMATS", "VERDICT_POSITIONS", "ParsedVerdict", "VerdictFormat", "get_verdict_format", "parse_verdict",
]

# where the prompt asks for the verdict -> which of the well-formed tags is the verdict
VERDICT_POSITIONS = {"first": 0, "last": -1}


@dataclass(frozen=True)
class VerdictFormat:
    """``pattern`` finds well-formed verdicts (group 1 is the integer);
    ``constrained`` builds a regex for structured decoding from the scale; ``at``
    (a :data:`VERDICT_POSITIONS` key) says which tag is the verdict, and must match
    where the template's prompt asks for it."""

    name: str
    pattern: re.Pattern[str]
    tag: str  # example shown in errors
    at: str = "last"

    def constrained(self, scale: Sequence[int], preamble_chars: int = 1000) -> str:
        """Free text of at most ``preamble_chars`` characters, then the verdict. The
        grader's max_tokens must leave room for both, or the reply is cut first."""
        choices = "|".join(str(s) for s in scale)
        if self.name == "score_tag":
            return rf"[^<>]{{0,{preamble_chars}}}<score>({choices})</score>"
        return rf"[^<>]{{0,{preamble_chars}}}<points>({choices}) out of 7</points>"


VERDICT_FORMATS: dict[str, VerdictFormat] = {
    fmt.name: fmt
    for fmt in (
        VerdictFormat("score_tag", re.compile(r"<score>\s*(-?\d+)\s*</score>", re.IGNORECASE), "<score>N</score>"),
        VerdictFormat(
            "points_tag",
            re.compile(r"<points>\s*(-?\d+)\s*(?:out\s+of\s+7\s*)?</points>", re.IGNORECASE),
            "<points>N out of 7</points>",
        ),
    )
}


def get_verdict_format(name: str, at: str = "last") -> VerdictFormat:
    """The format ``name`` read at position ``at`` (``first`` or ``last`` tag)."""
    try:
        fmt = VERDICT_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown verdict format {name!r}; valid: {sorted(VERDICT_FORMATS)}") from None
    if at not in VERDICT_POSITIONS:
        raise ValueError(f"unknown verdict position {at!r}; valid: {sorted(VERDICT_POSITIONS)}")
    return fmt if at == fmt.at else replace(fmt, at=at)


@dataclass(frozen=True)
class ParsedVerdict:
    score: int | None
    error: str | None = None


def final_answer(reply: str) -> str:
    """The judge's answer after its reasoning, when the reasoning is inline."""
    cut = reply.rfind("</think>")
    return reply if cut < 0 else reply[cut + len("</think>"):]


def drop_echoed_proof(reply: str, fence_tag: str | None) -> str:
    """Removes complete ``BEGIN PROOF <tag>`` ... ``END PROOF <tag>`` regions the
    judge copied into its reply: whatever they contain was written by the policy."""
    if not fence_tag:
        return reply
    # str.find rather than a regex: the tag is new per request, so a compiled pattern
    # would never be reused.
    begin, end = f"BEGIN PROOF {fence_tag}", f"END PROOF {fence_tag}"
    parts, pos = [], 0
    while (start := reply.find(begin, pos)) >= 0 and (stop := reply.find(end, start + len(begin))) >= 0:
        parts.append(reply[pos:start])
        pos = stop + len(end)
    parts.append(reply[pos:])
    return " ".join(parts)


def parse_verdict(
    reply: str, fmt: VerdictFormat | str, scale: Sequence[int], fence_tag: str | None = None
) -> ParsedVerdict:
    """Score from a judge's reply text (its final answer, not its reasoning).

    Args:
        reply: The judge's answer; inline ``<think>`` reasoning is skipped.
        fmt: A :class:`VerdictFormat` (its ``at`` picks the first or last tag) or its
            registry name (read at the last tag).
        scale: The allowed scores (``[0, 1, 6, 7]`` for IMO-style grading).
        fence_tag: The tag of the prompt's proof fence, to drop echoes of it.
    """
    fmt = get_verdict_format(fmt) if isinstance(fmt, str) else fmt
    text = drop_echoed_proof(final_answer(reply), fence_tag)
    found = fmt.pattern.findall(text)
    if not found:
        snippet = " ".join(text.split())[-120:]
        return ParsedVerdict(None, f"no_verdict: no {fmt.tag} in the judge's answer (ends: {snippet!r})")
    score = int(found[VERDICT_POSITIONS[fmt.at]])
    if score not in scale:
        return ParsedVerdict(None, f"out_of_scale: judge gave {score}, allowed {list(scale)}")
    return ParsedVerdict(score)
