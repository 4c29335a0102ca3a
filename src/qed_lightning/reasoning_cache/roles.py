"""The generation callables of the reasoning cache, over the project's engines.

``run_cycles`` takes two callables (user messages -> ``TurnOutput`` each); these
build them from what a run has: the policy's rollout engine (reasoning turns, and
the summary turns when the policy summarizes itself, as test-time RC does by
default) and a frozen summarizer behind the ``CompletionClient`` interface (its own
in-process vLLM engine or a ``vllm serve`` over HTTP), which never receives weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

from qed_lightning.contracts import RolloutEngine, SamplingSettings
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.models import user_turn_ids
from qed_lightning.reasoning_cache.trajectory import TurnOutput
from qed_lightning.rollouts.seeds import sample_seed

__all__ = ["chat_overhead", "client_generator", "count_text_tokens", "engine_generator"]

Generate = Callable[[list[str]], list[TurnOutput]]


def count_text_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` itself (no chat template, no special tokens)."""
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def chat_overhead(tokenizer) -> int:
    """Tokens the chat template adds around a user message (with the generation prompt)."""
    return len(user_turn_ids(tokenizer, ""))


def _message_key(role: str, message: str) -> str:
    return role + ":" + hashlib.sha256(message.encode()).hexdigest()[:16]


def engine_generator(engine: RolloutEngine, tokenizer, sampling: SamplingSettings, seed: int, step: int,
                     role: str) -> Generate:
    """One completion per message from ``engine`` through ``tokenizer``'s chat template.

    Each request's seed derives from (run seed, step, role, message), so a turn is
    reproducible whatever else is in its batch.
    """
    one = dataclasses.replace(sampling, n=1)

    def generate(messages: list[str]) -> list[TurnOutput]:
        if not messages:
            return []
        prompts = [user_turn_ids(tokenizer, m) for m in messages]
        seeds = [[sample_seed(seed, step, _message_key(role, m), 0)] for m in messages]
        groups = engine.generate(prompts, one, sample_seeds=seeds)
        return [TurnOutput.from_completion(group[0]) for group in groups]

    return generate


def client_generator(client: CompletionClient, count_tokens: Callable[[str], int]) -> Generate:
    """One reply per message from a frozen model behind ``client``.

    A request the client could not answer (its ``error`` is set) comes back as empty
    text, which ``run_cycles`` counts as a summarizer failure; ``count_tokens`` sizes
    the reply (the client reports text, not tokens).
    """

    def generate(messages: list[str]) -> list[TurnOutput]:
        replies = client.complete([JudgeRequest(m) for m in messages])
        return [TurnOutput("", 0) if r.error else TurnOutput(r.text, count_tokens(r.text), r.finish_reason == "length")
                for r in replies]

    return generate
