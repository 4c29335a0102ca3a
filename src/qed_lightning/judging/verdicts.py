"""Reading a score out of a judge's reply.

Each verdict format is one entry in :data:`VERDICT_FORMATS` (name -> pattern and
the regex that constrains decoding to it). The parser reads only the judge's final
answer, drops any echo of the fenced proof, and takes the *last* well-formed tag: a
judge that quotes the proof (and a score the proof pretends to have) before giving
its own verdict is still read correctly. No verdict, or a score off the scale, is
an error, never a number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["VERDICT_FORMATS", "ParsedVerdict", "VerdictFormat", "get_verdict_format", "parse_verdict"]


@dataclass(frozen=True)
class VerdictFormat:
    """``pattern`` finds well-formed verdicts (group 1 is the integer);
    ``constrained`` builds a regex for structured decoding from the scale."""

    name: str
    pattern: re.Pattern[str]
    tag: str  # example shown in errors

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


def get_verdict_format(name: str) -> VerdictFormat:
    try:
        return VERDICT_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown verdict format {name!r}; valid: {sorted(VERDICT_FORMATS)}") from None


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
        fmt: A :class:`VerdictFormat` or its registry name.
        scale: The allowed scores (``[0, 1, 6, 7]`` for IMO-style grading).
        fence_tag: The random tag of the prompt's proof fence, to drop echoes of it.
    """
    fmt = get_verdict_format(fmt) if isinstance(fmt, str) else fmt
    text = drop_echoed_proof(final_answer(reply), fence_tag)
    found = fmt.pattern.findall(text)
    if not found:
        snippet = " ".join(text.split())[-120:]
        return ParsedVerdict(None, f"no_verdict: no {fmt.tag} in the judge's answer (ends: {snippet!r})")
    score = int(found[-1])
    if score not in scale:
        return ParsedVerdict(None, f"out_of_scale: judge gave {score}, allowed {list(scale)}")
    return ParsedVerdict(score)
