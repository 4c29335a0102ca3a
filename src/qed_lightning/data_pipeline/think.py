"""A teacher's completion split into ``reasoning_content`` and ``proof``.

The proof is the text after the LAST ``</think>`` (the same cut the judge makes,
``judging/answer.py``); the reasoning is what comes before it, without an opening
``<think>``. A server that parses reasoning out itself (vLLM's ``reasoning`` field,
SGLang's ``reasoning_content``) sends the proof as the content and the thinking
apart: then the field is the reasoning. A completion is *truncated* when the server
says it stopped at its token limit (``finish_reason: length``), or when a thinking
completion never closed its thinking (no ``</think>`` and no reasoning field: it ran
out while thinking). An empty proof is reported apart from truncation.
"""
from __future__ import annotations

from dataclasses import dataclass

from qed_lightning.judging.answer import THINK_END

__all__ = ["ThinkSplit", "split_think"]

THINK_START = "<think>"


@dataclass(frozen=True)
class ThinkSplit:
    reasoning: str
    proof: str
    truncated: bool

    @property
    def drop_reason(self) -> str | None:
        """``truncated``, ``empty_proof`` or None (usable)."""
        return "truncated" if self.truncated else "empty_proof" if not self.proof else None


def split_think(text: str, reasoning_field: str | None = None, finish_reason: str | None = None,
                thinking: bool = True) -> ThinkSplit:
    """Splits one completion.

    Args:
        text: The completion's content.
        reasoning_field: The server's separate reasoning, if it sent one.
        finish_reason: The server's finish reason (``length``: hit max_tokens).
        thinking: The teacher thinks (a missing ``</think>`` then means truncated);
            False for a model that writes only the proof.
    """
    reasoning, proof, closed = (reasoning_field or "").strip(), text, bool(reasoning_field and reasoning_field.strip())
    cut = text.rfind(THINK_END)
    if cut >= 0:  # inline thinking (or a stray tag after a parsed-out one): the last tag cuts
        inline = text[:cut].strip()
        if inline.startswith(THINK_START):
            inline = inline[len(THINK_START):].strip()
        reasoning = "\n\n".join(p for p in (reasoning, inline) if p)
        proof, closed = text[cut + len(THINK_END):], True
    truncated = finish_reason == "length" or (thinking and not closed)
    return ThinkSplit(reasoning, proof.strip(), truncated)
