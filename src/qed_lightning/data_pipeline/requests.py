"""Many model calls through a ``CompletionClient``, each result stored as it finishes.

``chunk_size`` requests go to the client per ``complete`` call and ``workers`` such
calls are in flight at once. An HTTP client wants ``chunk_size: 1`` and ``workers`` =
its ``max_concurrency``: every reply is stored the moment it arrives and a slow
request holds up nothing else. An in-process engine wants one worker and large
chunks (it batches them). A progress bar counts requests and tokens.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from qed_lightning.judging.client import CompletionClient, JudgeReply, JudgeRequest
from qed_lightning.data_pipeline.store import ResultStore

__all__ = ["CallSettings", "RunCounts", "reply_row", "run_requests"]


@dataclass(frozen=True)
class CallSettings:
    """How requests are sent.

    Args:
        chunk_size: Requests per ``client.complete`` call (1 for HTTP clients; many for
            an in-process engine, which batches them).
        workers: ``complete`` calls in flight at once (an HTTP client's ``max_concurrency``;
            1 for an in-process engine).
        progress: Show a progress bar with counts and tokens.
    """

    chunk_size: int = 1
    workers: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.workers < 1:
            raise ValueError(f"calls.chunk_size and calls.workers must be >= 1, got {self.chunk_size}, {self.workers}")


@dataclass
class RunCounts:
    """What one :func:`run_requests` did."""

    sent: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def reply_row(key: str, reply: JudgeReply, **fields: Any) -> dict[str, Any]:
    """A store row for ``reply``: the text and usage, or the error and no text (a
    failure is never an empty completion)."""
    row: dict[str, Any] = {"key": key, **fields, "attempts": reply.attempts, "latency_s": round(reply.latency_s, 4)}
    if reply.error is not None:
        row["error"] = reply.error
        return row
    row.update(completion=reply.text, reasoning=reply.reasoning, finish_reason=reply.finish_reason,
               usage={"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
               error=None)
    return row


def run_requests(
    client: CompletionClient,
    todo: Sequence[tuple[str, JudgeRequest, dict[str, Any]]],
    store: ResultStore,
    calls: CallSettings,
    desc: str = "requests",
    to_row: Callable[[str, JudgeReply, dict[str, Any]], dict[str, Any]] | None = None,
) -> RunCounts:
    """Sends every ``(key, request, fields)`` of ``todo`` and appends one store row per
    reply (``to_row(key, reply, fields)``, default :func:`reply_row`) as it finishes."""
    make_row = to_row or (lambda key, reply, fields: reply_row(key, reply, **fields))
    counts, lock, start = RunCounts(), threading.Lock(), time.perf_counter()
    chunks = [todo[i:i + calls.chunk_size] for i in range(0, len(todo), calls.chunk_size)]
    bar = None
    if calls.progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=desc, unit="req")

    def one(chunk: Sequence[tuple[str, JudgeRequest, dict[str, Any]]]) -> None:
        replies = client.complete([request for _, request, _ in chunk])
        for (key, _, fields), reply in zip(chunk, replies, strict=True):
            store.append(make_row(key, reply, fields))
            with lock:
                counts.sent += 1
                counts.failed += reply.error is not None
                counts.prompt_tokens += reply.prompt_tokens or 0
                counts.completion_tokens += reply.completion_tokens or 0
                if bar is not None:
                    bar.update()
                    bar.set_postfix(failed=counts.failed, tokens=counts.completion_tokens, refresh=False)

    # at most `workers` chunks submitted at a time: a kill leaves few requests in flight
    with ThreadPoolExecutor(max_workers=calls.workers, thread_name_prefix="qed-data") as pool:
        pending, it = set(), iter(chunks)
        for chunk in it:
            pending.add(pool.submit(one, chunk))
            if len(pending) >= calls.workers:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()
        for f in pending:
            f.result()
    if bar is not None:
        bar.close()
    counts.seconds = time.perf_counter() - start
    return counts
