"""Grader tokens per proof, read from the replies of the judge stack's own clients.

A verdict does not carry the reply's token count, so the bench wraps the client of
every LLM judge it runs (:func:`meter_judge`) in a :class:`TokenMeter` that records
``completion_tokens`` of each reply. An ``LLMJudge`` sends one request per item that is
neither an empty/truncated answer nor a cache hit, in item order, in one ``complete``
call per ``grade``: so the fresh verdicts (origin ``judge``) of a ``grade`` call match
the recorded replies one to one, in order (:func:`tokens_per_item`). An ensemble is
attributed through its members' last verdicts. Where the match does not hold (another
client, a judge of another kind) the tokens are unknown (None), never guessed.
"""
from __future__ import annotations

from typing import Any, Sequence

from qed_lightning.contracts import Verdict
from qed_lightning.judging.client import JudgeReply, JudgeRequest

__all__ = ["TokenMeter", "meter_judge", "tokens_per_item"]


class TokenMeter:
    """A ``CompletionClient`` that passes every call to ``client`` and keeps the token
    counts of the replies until :meth:`take`. Same fingerprint: the cache is shared."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._calls: list[list[int | None]] = []

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        replies = self.client.complete(requests)
        self._calls.append([r.completion_tokens for r in replies])
        return replies

    def fingerprint(self) -> dict[str, Any]:
        return self.client.fingerprint()

    def take(self) -> list[list[int | None]]:
        """The replies' token counts per ``complete`` call since the last take."""
        calls, self._calls = self._calls, []
        return calls

    def __getattr__(self, name: str) -> Any:  # close(), engine, ... of the wrapped client
        return getattr(self.client, name)


def meter_judge(judge: Any) -> None:
    """Wraps the client of ``judge`` and of each of its members (once)."""
    for member in getattr(judge, "members", ()):
        meter_judge(member)
    client = getattr(judge, "client", None)
    if client is not None and not isinstance(client, TokenMeter) and hasattr(client, "complete"):
        judge.client = TokenMeter(client)


def tokens_per_item(judge: Any, verdicts: Sequence[Verdict]) -> list[int | None]:
    """Tokens generated for each of the last ``grade`` call's items (None: unknown or
    no call). Consumes what the meters recorded for that call."""
    if hasattr(judge, "last_member_verdicts"):
        return _ensemble_tokens(judge, len(verdicts))
    meter = getattr(judge, "client", None)
    if not isinstance(meter, TokenMeter):
        return [None] * len(verdicts)
    calls = meter.take()
    fresh = [i for i, v in enumerate(verdicts) if v.origin == "judge"]
    counts = [t for call in calls for t in call]
    out: list[int | None] = [None] * len(verdicts)
    if len(calls) <= 1 and len(counts) == len(fresh):
        for i, t in zip(fresh, counts):
            out[i] = t
    return out


def _ensemble_tokens(judge: Any, n: int) -> list[int | None]:
    total: list[int | None] = [None] * n
    for member, verdicts in judge.last_member_verdicts:  # verdicts: [k * n], sample-major
        for j, t in enumerate(tokens_per_item(member, verdicts)):
            if t is not None:
                total[j % n] = (total[j % n] or 0) + t
    return total
