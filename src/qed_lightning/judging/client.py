"""The interface between an LLM judge and whatever runs the grader model.

An :class:`~qed_lightning.judging.llm_judge.LLMJudge` turns items into prompts and
replies into verdicts; a ``CompletionClient`` only answers prompts. The HTTP client
(``judging/openai_client.py``) is one; an in-process vLLM engine is another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

__all__ = ["CompletionClient", "JudgeReply", "JudgeRequest"]


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str
    # Regex the reply must match (structured decoding); None leaves decoding free.
    constrained_regex: str | None = None
    # A whole conversation ({"role": system|user|assistant, "content": ...} each) sent
    # instead of ``prompt`` as the one user turn: what multi-call scaffolds need.
    messages: tuple[dict[str, str], ...] | None = None
    # The request's own sampling seed (servers that take one, as vLLM does): a
    # scaffold's call is then reproducible whatever else is in flight.
    seed: int | None = None


@dataclass(frozen=True)
class JudgeReply:
    """The grader's final answer and, separately, its reasoning when the server
    splits it out. ``error`` (``"<kind>: <detail>"``) is set when no usable reply
    came back after the retries."""

    text: str = ""
    reasoning: str = ""
    error: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    finish_reason: str | None = None
    completion_tokens: int | None = None  # as the server reports them (usage), when it does
    prompt_tokens: int | None = None


@runtime_checkable
class CompletionClient(Protocol):
    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        """One reply per request, in order; never raises for a per-request failure."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change the grader's answers (model, sampling): part of the
        cache key, so a different judge never reuses another's verdicts."""
        ...
