"""OpenAI-compatible HTTP grader client (the project's only HTTP client import).

Speaks chat completions and the Responses API (reasoning models such as gpt-oss take
``reasoning.effort`` there), to a ``vllm serve`` or any compatible endpoint. Requests
run on a bounded thread pool over one keep-alive connection pool; each has a timeout
and is retried with exponential backoff and full jitter on timeouts, dropped
connections, 429 (honouring Retry-After), 5xx and unreadable bodies. Other 4xx are
not retried: resending the same request cannot fix it. A prompt longer than the
grader's context is reported as ``too_long``.

The API key is read from the environment variable named by ``api_key_env``; only the
name is ever part of a config, and the key is scrubbed from any error text.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Sequence

import httpx

from qed_lightning.judging.client import JudgeReply, JudgeRequest

__all__ = ["OpenAICompatibleClient"]

APIS = ("chat", "responses")
_CONTEXT_MARKERS = ("maximum context length", "context length", "too many tokens", "prompt is too long")


class _Retryable(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.retry_after = kind, retry_after


class _Final(Exception):
    pass


class OpenAICompatibleClient:
    """Grader calls over HTTP.

    Args:
        base_url: Server root including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``).
        model: Model name the server knows (``openai/gpt-oss-20b``).
        api: ``"chat"`` (``/chat/completions``) or ``"responses"`` (``/responses``).
        api_key_env: Name of the environment variable holding the key; None sends no key.
        temperature: Grader sampling temperature (the paper's gpt-oss reward grader:
            1.0); None sends none, so the provider's default applies (the released
            evaluation config's Gemini grader).
        max_tokens: Output budget (``max_completion_tokens`` / ``max_output_tokens``).
        reasoning_effort: ``low``/``medium``/``high`` for reasoning models, or None.
        timeout_s: Per-request timeout (each attempt).
        max_attempts: Requests per item in all, the first included, for retryable
            failures (the paper: 3). 1 never resends.
        backoff_s: Base of the exponential backoff; attempt k waits up to
            ``backoff_s * 2**k`` (full jitter), capped at ``max_backoff_s``.
        max_backoff_s: Cap on one wait, Retry-After included.
        max_concurrency: Requests in flight at once.
        extra_body: Extra JSON fields sent with every request (server-specific options).
        progress: Show a progress bar (done / total) while a batch is graded.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "chat",
        api_key_env: str | None = None,
        temperature: float | None = 1.0,
        max_tokens: int = 8192,
        reasoning_effort: str | None = None,
        timeout_s: float = 900.0,
        max_attempts: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 64,
        extra_body: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        if max_concurrency < 1 or max_attempts < 1 or timeout_s <= 0:
            raise ValueError(f"OpenAICompatibleClient needs max_concurrency >= 1, max_attempts >= 1 (requests in "
                             f"all, the first included) and timeout_s > 0; got {max_concurrency}, {max_attempts}, "
                             f"{timeout_s}")
        self.base_url, self.model, self.api = base_url.rstrip("/"), model, api
        self.temperature, self.max_tokens, self.reasoning_effort = temperature, max_tokens, reasoning_effort
        self.timeout_s, self.max_attempts = timeout_s, max_attempts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_concurrency, self.extra_body = max_concurrency, dict(extra_body or {})
        self.api_key_env, self.progress = api_key_env, progress
        headers = {}
        self._secret: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"judge API key: environment variable {api_key_env} is not set")
            self._secret = key
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._http = httpx.Client(headers=headers, limits=limits, timeout=httpx.Timeout(timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="qed-judge")
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatibleClient(base_url={self.base_url!r}, model={self.model!r}, api={self.api!r})"

    def fingerprint(self) -> dict[str, Any]:
        return {
            "model": self.model, "api": self.api, "temperature": self.temperature,
            "max_tokens": self.max_tokens, "reasoning_effort": self.reasoning_effort, "extra_body": self.extra_body,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        if not self.progress:
            return list(self._pool.map(self._complete_one, requests))
        from tqdm.auto import tqdm

        futures = [self._pool.submit(self._complete_one, r) for r in requests]
        with tqdm(total=len(futures), desc="judging", unit="proof") as bar:
            for _ in as_completed(futures):
                bar.update()
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ one request

    def _complete_one(self, request: JudgeRequest) -> JudgeReply:
        url, body = self._request(request)
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                text, reasoning, finish, tokens, prompt_tokens = self._attempt(url, body)
                return JudgeReply(text, reasoning, None, time.perf_counter() - start, attempt, finish, tokens,
                                  prompt_tokens)
            except _Final as err:
                return JudgeReply(error=self._scrub(str(err)), latency_s=time.perf_counter() - start, attempts=attempt)
            except _Retryable as err:
                if attempt >= self.max_attempts:
                    detail = f"{err} (gave up after {attempt} attempts)"
                    return JudgeReply(error=self._scrub(detail), latency_s=time.perf_counter() - start, attempts=attempt)
                time.sleep(self._backoff(attempt - 1, err.retry_after))

    def _backoff(self, retry_index: int, retry_after: float | None) -> float:
        with self._rng_lock:
            wait = self._rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** retry_index))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_backoff_s)

    def _request(self, request: JudgeRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model}
        if self.temperature is not None:  # None: the provider's default
            body["temperature"] = self.temperature
        messages = ([dict(m) for m in request.messages] if request.messages is not None
                    else [{"role": "user", "content": request.prompt}])
        if request.seed is not None:
            body["seed"] = request.seed
        if self.api == "chat":
            body["messages"] = messages
            body["max_completion_tokens"] = self.max_tokens
            if self.reasoning_effort:
                body["reasoning_effort"] = self.reasoning_effort
        else:
            body["input"] = messages
            body["max_output_tokens"] = self.max_tokens
            if self.reasoning_effort:
                body["reasoning"] = {"effort": self.reasoning_effort}
        if request.constrained_regex is not None:
            body["structured_outputs"] = {"regex": request.constrained_regex}  # vLLM's field
        body.update(self.extra_body)
        return f"{self.base_url}/{'chat/completions' if self.api == 'chat' else 'responses'}", body

    def _attempt(self, url: str, body: dict[str, Any]) -> tuple[str, str, str | None, int | None, int | None]:
        try:
            resp = self._http.post(url, json=body)
        except httpx.TimeoutException as err:
            raise _Retryable("timeout", f"no reply within {self.timeout_s:g} s ({type(err).__name__})") from None
        except httpx.TransportError as err:  # refused, reset, dropped mid-reply
            raise _Retryable("connection", f"{type(err).__name__}: {err}") from None
        if resp.status_code == 429:
            raise _Retryable("rate_limited", "HTTP 429", _retry_after(resp))
        if resp.status_code >= 500:
            raise _Retryable(f"http_{resp.status_code}", _error_message(resp))
        if resp.status_code >= 400:
            message = _error_message(resp)
            kind = "too_long" if any(m in message.lower() for m in _CONTEXT_MARKERS) else f"http_{resp.status_code}"
            raise _Final(f"{kind}: {message}")
        try:
            data = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable("malformed_response", f"body is not JSON ({resp.text[:80]!r})") from None
        return _parse_chat(data) if self.api == "chat" else _parse_responses(data)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error", {})
        message = err.get("message") if isinstance(err, dict) else str(err)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        message = None
    return f"HTTP {resp.status_code}: {(message or resp.text or '')[:300]}"


def _usage_tokens(data: Any, key: str) -> int | None:
    try:
        value = data.get("usage", {}).get(key)
        return int(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None  # usage is informational: a server without it still answered


def _parse_chat(data: Any) -> tuple[str, str, str | None, int | None, int | None]:
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        # vLLM names it "reasoning"; other servers "reasoning_content"
        reasoning = message.get("reasoning") or message.get("reasoning_content") or ""
        return (text, reasoning, choice.get("finish_reason"), _usage_tokens(data, "completion_tokens"),
                _usage_tokens(data, "prompt_tokens"))
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable("malformed_response", f"no choices[0].message in the reply ({str(data)[:80]})") from None


def _parse_responses(data: Any) -> tuple[str, str, str | None, int | None, int | None]:
    try:
        texts, thoughts = [], []
        for item in data["output"]:
            if item.get("type") == "message":
                texts += [c.get("text", "") for c in item.get("content", []) if c.get("type") == "output_text"]
            elif item.get("type") == "reasoning":
                thoughts += [c.get("text", "") for c in item.get("content") or [] if "text" in c]
    except (KeyError, TypeError, AttributeError):
        raise _Retryable("malformed_response", f"no output list in the reply ({str(data)[:80]})") from None
    if not texts and not thoughts:
        raise _Retryable("malformed_response", "the reply's output holds no message")
    finish = (data.get("incomplete_details") or {}).get("reason") or data.get("status")
    return "".join(texts), "".join(thoughts), finish, _usage_tokens(data, "output_tokens"), _usage_tokens(data,
                                                                                                        "input_tokens")
