"""Batched chat generation for scaffolds, over an in-process engine or a server.

A ``ChatGenerate`` takes (call, seed) pairs and returns one ``Reply`` each, in order.
The engine path renders each conversation with the tokenizer's chat template and
refuses, without a call, a prompt longer than the context leaves room for (a counted
``too_long`` skip); the server path sends the messages as they are and the server's
own refusal comes back as the same error kind.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from qed_lightning.contracts import RolloutEngine, SamplingSettings
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.models import chat_ids
from qed_lightning.scaffolds.base import Call, Reply, answer_of

__all__ = ["ChatGenerate", "client_chat", "engine_chat"]

ChatGenerate = Callable[[Sequence[tuple[Call, int]]], list[Reply]]


def engine_chat(engine: RolloutEngine, tokenizer, sampling: SamplingSettings, answer_mode: str,
                prompt_limit: int | None) -> ChatGenerate:
    """Generation with ``engine``; ``prompt_limit``: the most prompt tokens a call may
    have (the context minus ``sampling.max_tokens``), None for no check."""
    one = dataclasses.replace(sampling, n=1)

    def generate(calls: Sequence[tuple[Call, int]]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(calls)
        todo: list[tuple[int, list[int], int]] = []
        for i, (call, seed) in enumerate(calls):
            ids = chat_ids(tokenizer, call.messages)
            if prompt_limit is not None and len(ids) > prompt_limit:
                replies[i] = Reply("", "", 0, len(ids), error=f"too_long: prompt has {len(ids)} tokens, at most "
                                                               f"{prompt_limit} fit beside max_tokens")
            else:
                todo.append((i, ids, seed))
        if todo:
            groups = engine.generate([ids for _, ids, _ in todo], one, sample_seeds=[[seed] for _, _, seed in todo])
            for (i, ids, _), group in zip(todo, groups, strict=True):
                c = group[0]
                replies[i] = Reply(c.text, answer_of(c.text, answer_mode), len(c.completion_ids), len(ids),
                                   c.truncated)
        return replies  # type: ignore[return-value]

    return generate


def client_chat(client: CompletionClient, answer_mode: str) -> ChatGenerate:
    """Generation through ``client`` (an OpenAI-compatible server). A server that
    splits the reasoning out gets it put back as ``<think>...</think>`` before the
    answer, so every path cuts the answer the same way."""

    def generate(calls: Sequence[tuple[Call, int]]) -> list[Reply]:
        replies = client.complete([JudgeRequest("", messages=call.messages, seed=seed) for call, seed in calls])
        out = []
        for r in replies:
            if r.error:
                out.append(Reply("", "", 0, r.prompt_tokens or 0, error=r.error))
                continue
            text = f"<think>{r.reasoning}</think>{r.text}" if r.reasoning else r.text
            out.append(Reply(text, answer_of(text, answer_mode), r.completion_tokens or 0, r.prompt_tokens or 0,
                             r.finish_reason == "length"))
        return out

    return generate
