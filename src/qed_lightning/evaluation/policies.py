"""The model under evaluation, as turn generators: an in-process engine or a server.

Both give ``generator(role, sample_index) -> (user messages -> TurnOutput each)``, the
shape the reasoning cache's cycles take, so single-turn and RC evaluation share one
path. ``role`` is ``reason`` (the proof attempt) or ``summary`` (RC summaries when the
policy summarizes itself). Each sample index gets its own seeds, so the k samples of
a problem differ and a rerun reproduces them.
"""
from __future__ import annotations

from typing import Callable

from qed_lightning.contracts import SamplingSettings
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.reasoning_cache.roles import chat_overhead, count_text_tokens, engine_generator
from qed_lightning.reasoning_cache.trajectory import TurnOutput

__all__ = ["EnginePolicy", "ServerPolicy"]

Generate = Callable[[list[str]], list[TurnOutput]]
SUMMARY_SAMPLING = SamplingSettings(temperature=0.7, top_p=0.8, top_k=20, max_tokens=2048)


class EnginePolicy:
    """The policy in a colocated in-process engine (``VLLMEngine``, or any engine given).

    Args:
        model: Alias, directory or hub id (the checkpoint's HF export).
        sampling: The proof turns' sampling (the paper's RL checkpoints: 0.8 / 1.0).
        summary_sampling: Sampling of the policy's own RC summaries.
        dtype, max_model_len, kv_cache_memory_bytes, gpu_memory_utilization,
            tensor_parallel_size: The engine's settings.
        seed: Base seed of every sample.
        engine: An engine to use instead of building one (the RL run's own, from the
            evaluation callback); ``tokenizer`` must come with it.
    """

    def __init__(self, model: str = "demo", sampling: SamplingSettings = SamplingSettings(temperature=0.8, top_p=1.0,
                 max_tokens=4096), summary_sampling: SamplingSettings = SUMMARY_SAMPLING, dtype: str = "auto",
                 max_model_len: int = 8192, kv_cache_memory_bytes: int | None = None,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1, seed: int = 0,
                 engine=None, tokenizer=None) -> None:
        self.model, self.sampling, self.summary_sampling, self.seed = model, sampling, summary_sampling, seed
        if engine is None:
            from qed_lightning.engines.vllm_engine import VLLMEngine  # the only vllm path
            from qed_lightning.models import load_tokenizer

            engine = VLLMEngine(model, dtype=dtype, max_model_len=max_model_len,
                                kv_cache_memory_bytes=kv_cache_memory_bytes,
                                gpu_memory_utilization=gpu_memory_utilization,
                                tensor_parallel_size=tensor_parallel_size, seed=seed, enable_prefix_caching=True)
            tokenizer = load_tokenizer(model)
        elif tokenizer is None:
            raise ValueError("EnginePolicy with an engine needs its tokenizer")
        self.engine, self.tokenizer = engine, tokenizer

    def generator(self, role: str, sample_index: int) -> Generate:
        sampling = self.sampling if role == "reason" else self.summary_sampling
        return engine_generator(self.engine, self.tokenizer, sampling, self.seed, sample_index, f"eval_{role}")

    def count_tokens(self, text: str) -> int:
        return count_text_tokens(self.tokenizer, text)

    def chat(self, answer_mode: str):
        """A scaffold's batched chat generation (``scaffolds.chat``) with the proof
        sampling; a prompt that leaves no room for ``max_tokens`` is skipped, counted."""
        from qed_lightning.scaffolds.chat import engine_chat

        limit = getattr(self.engine, "max_model_len", None)
        return engine_chat(self.engine, self.tokenizer, self.sampling, answer_mode,
                           None if limit is None else limit - self.sampling.max_tokens)

    def max_prompt_tokens(self) -> int | None:
        limit = getattr(self.engine, "max_model_len", None)
        return None if limit is None else limit - self.sampling.max_tokens - chat_overhead(self.tokenizer)


class ServerPolicy:
    """The policy behind an OpenAI-compatible server (``vllm serve``).

    The server splits the reasoning out (vLLM's reasoning parser); it is put back
    before the answer as ``<think>...</think>`` so the graded answer and the RC chain of
    thought are cut out exactly as for an in-process engine. Sampling is the client's;
    per-request seeds go through ``extra_body`` where the server takes them.

    Args:
        client: The policy's ``CompletionClient`` (``OpenAICompatibleClient``).
        summary_client: Another client for the policy's own RC summaries (other
            sampling); None: ``client``.
        seed: Base of the per-request seeds of scaffold calls.
    """

    def __init__(self, client: CompletionClient, summary_client: CompletionClient | None = None,
                 seed: int = 0) -> None:
        self.client, self.summary_client, self.seed = client, summary_client, seed

    def generator(self, role: str, sample_index: int) -> Generate:
        client = self.client if role == "reason" or self.summary_client is None else self.summary_client

        def generate(messages: list[str]) -> list[TurnOutput]:
            replies = client.complete([JudgeRequest(m) for m in messages])
            out = []
            for r in replies:
                if r.error:  # a failed request is an empty, counted turn: never silently a proof
                    out.append(TurnOutput("", 0, False, error=r.error))
                    continue
                text = f"<think>{r.reasoning}</think>{r.text}" if r.reasoning else r.text
                out.append(TurnOutput(text, r.completion_tokens or 0, r.finish_reason == "length"))
            return out

        return generate

    def chat(self, answer_mode: str):
        """A scaffold's chat generation through ``client``, a seed per request."""
        from qed_lightning.scaffolds.chat import client_chat

        return client_chat(self.client, answer_mode)

    def count_tokens(self, text: str) -> int:
        return len(text) // 4  # no tokenizer at hand: a rough count, used for summary budgets only

    def max_prompt_tokens(self) -> int | None:
        return None  # the server refuses prompts that do not fit (a counted error)
