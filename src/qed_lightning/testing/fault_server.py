"""A fault-injecting OpenAI-compatible HTTP server, for testing LLM-judge clients.

Tests and the judge benchmark need a server that misbehaves on purpose (5xx, 429 with
Retry-After, truncated JSON, empty choices, dropped connections, replies slower than the
client's timeout) and that has a finite capacity, so they can check that the HTTP judge
client retries, gives up, and scales the way it should. This module is standard library
only and runs in its own process, bound to 127.0.0.1:

    python -m qed_lightning.testing.fault_server --port 0 --config '{"fault_rate": 0.2}'

prints ``PORT <n>`` once listening and serves ``/v1/chat/completions``, ``/v1/responses``,
``/health``, ``/stats``, ``/reset_stats`` and ``/shutdown``. It stops by itself when idle,
after ``max_requests`` API requests, when its parent dies, or on ``POST /shutdown``, so a
crashed test cannot leak it. ``fault_server_handle.FaultServer`` starts it from a parent
process (a context manager).

A prompt containing ``FAULT=<kind>`` forces that fault; ``SCORE=<int>`` sets the score of
a normal reply. See ``DEFAULTS`` for the config keys and ``FAULT_KINDS`` for the faults.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

FAULT_KINDS = ("slow", "http_500", "http_503", "http_429", "http_400", "malformed_json",
               "empty_choices", "out_of_scale", "no_verdict", "drop")
DEFAULTS: dict[str, Any] = {
    "service_time_s": 0.0, "max_concurrency": 0, "fault_rate": 0.0,
    "faults": [kind for kind in FAULT_KINDS if kind != "slow"], "seed": 0, "slow_s": 30.0,
    "retry_after_s": 0.05,
    "reply_template": "<assessment>Graded by the fault server.</assessment>\n<score>{score}</score>",
    "default_score": 7, "reasoning_text": None, "max_body_bytes": 8_000_000,
    "idle_timeout_s": 120.0, "max_requests": 100_000,
}
CONTEXT_LENGTH_MESSAGE = ("This model's maximum context length is 2048 tokens. However, your prompt "
                          "contains at least 4096 input tokens.")
NO_VERDICT_TEXT = "<assessment>I could not decide.</assessment>"
API_PATHS = ("/v1/chat/completions", "/v1/responses")
_ERROR_FAULTS = {  # kind -> (status, error type, message)
    "http_500": (500, "server_error", "Internal server error (injected fault)."),
    "http_503": (503, "server_error", "Service unavailable (injected fault)."),
    "http_429": (429, "rate_limit_error", "Too many requests (injected fault)."),
    "http_400": (400, "invalid_request_error", CONTEXT_LENGTH_MESSAGE),
}
_FLOAT_KEYS = ("service_time_s", "fault_rate", "slow_s", "retry_after_s", "idle_timeout_s")
_INT_KEYS = ("max_concurrency", "seed", "default_score", "max_body_bytes", "max_requests")
_DRAIN_LIMIT = 64 * 1024 * 1024  # drain oversized bodies up to this so the client sees its 413
_FORCED_FAULT = re.compile(r"FAULT=([a-z0-9_]+)")
_SCORE = re.compile(r"SCORE=(-?\d+)")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return ``config`` merged over ``DEFAULTS``; raise ValueError on a bad key or value."""
    if not isinstance(config, dict):
        raise ValueError(f"fault server config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown fault server config key(s): {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(DEFAULTS))})")
    cfg = {**DEFAULTS, **config}
    for key in _FLOAT_KEYS:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)) or cfg[key] < 0:
            raise ValueError(f"fault server config {key} must be a non-negative number, got {cfg[key]!r}")
    for key in _INT_KEYS:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int):
            raise ValueError(f"fault server config {key} must be an integer, got {cfg[key]!r}")
    if cfg["fault_rate"] > 1 or cfg["max_concurrency"] < 0 or cfg["max_requests"] < 1:
        raise ValueError("fault server config needs fault_rate <= 1, max_concurrency >= 0, max_requests >= 1")
    if not isinstance(cfg["faults"], list) or any(kind not in FAULT_KINDS for kind in cfg["faults"]):
        raise ValueError(f"fault server config faults must be a list drawn from {FAULT_KINDS}, got {cfg['faults']!r}")
    if cfg["fault_rate"] > 0 and not cfg["faults"]:
        raise ValueError("fault server config fault_rate > 0 needs a non-empty faults list")
    if not isinstance(cfg["reply_template"], str) or not isinstance(cfg["reasoning_text"], (str, type(None))):
        raise ValueError("fault server config reply_template must be a string and reasoning_text a string or null")
    return cfg


class _FaultHTTPServer(ThreadingHTTPServer):
    """The listening server plus everything handlers share; ``lock`` guards the counters."""

    daemon_threads = True  # a handler stuck on a keep-alive socket must not block exit
    request_queue_size = 128  # the default backlog of 5 stalls bursts of concurrent clients

    def __init__(self, port: int, cfg: dict[str, Any]) -> None:
        self.cfg, self.lock, self.stop_event = cfg, threading.Lock(), threading.Event()
        self.rng = random.Random(cfg["seed"])  # one seeded stream, drawn under the lock
        self.capacity = threading.Semaphore(cfg["max_concurrency"]) if cfg["max_concurrency"] else None
        self.in_flight, self.served, self.next_id, self.last_activity = 0, 0, 0, time.monotonic()
        self.reset_stats()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse-DNS lookup that can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def reset_stats(self) -> None:
        # in_flight is a live gauge, not a counter: zeroing it mid-request would drive it negative.
        self.requests, self.peak_in_flight, self.last_request = 0, self.in_flight, None
        self.faults: collections.Counter[str] = collections.Counter()
        self.paths: collections.Counter[str] = collections.Counter()
        self.auth_sha256: set[str] = set()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
                    "faults": dict(self.faults), "paths": dict(self.paths),
                    "auth_sha256": sorted(self.auth_sha256), "last_request": self.last_request}

    def touch(self) -> None:
        with self.lock:
            self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last_activity

    def pick_fault(self, prompt: str) -> str | None:
        forced = [kind for kind in _FORCED_FAULT.findall(prompt) if kind in FAULT_KINDS]
        if forced:
            return forced[-1]
        with self.lock:  # threads share one seeded stream: reproducible fault counts
            hit = self.rng.random() < self.cfg["fault_rate"]
            return self.rng.choice(self.cfg["faults"]) if hit else None

    def sleep(self, seconds: float) -> None:
        """Sleep at least ``seconds`` (tests measure lower bounds) but wake at shutdown."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and (left := deadline - time.monotonic()) > 0:
            self.stop_event.wait(left)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _prompt_text(payload: dict[str, Any]) -> str:
    """All prompt text of a chat or responses request, concatenated (for FAULT=/SCORE= tags)."""
    parts = [payload["instructions"]] if isinstance(payload.get("instructions"), str) else []
    for key in ("messages", "input"):
        value = payload.get(key)
        for item in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            parts.append(_content_text(item.get("content") if isinstance(item, dict) else item))
    return "\n".join(parts)


def _reply_text(cfg: dict[str, Any], prompt: str, kind: str | None) -> str:
    if kind == "no_verdict":
        return NO_VERDICT_TEXT
    scores = _SCORE.findall(prompt)
    score = 9 if kind == "out_of_scale" else int(scores[-1]) if scores else cfg["default_score"]
    # str.replace, not str.format: a template with other braces (JSON verdicts) must not break.
    return cfg["reply_template"].replace("{score}", str(score))


def _chat_body(n: int, model: str, text: str, reasoning: str | None, prompt: str, empty: bool) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "reasoning": reasoning}
    choices = [] if empty else [{"index": 0, "message": message, "finish_reason": "stop"}]
    usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage}


def _responses_body(n: int, model: str, text: str, reasoning: str | None, prompt: str, empty: bool) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reasoning is not None:
        output.append({"type": "reasoning", "id": f"rs_{n}", "summary": [],
                       "content": [{"type": "reasoning_text", "text": reasoning}]})
    output.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]})
    usage = {"input_tokens": len(prompt) // 4, "output_tokens": len(text) // 4}
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return {"id": f"resp_{n}", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": model, "output": [] if empty else output, "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools are exercised
    disable_nagle_algorithm = True  # headers and body go out in separate writes: without this each reply waits ~40 ms for a delayed ACK
    server: _FaultHTTPServer
    _counted = False  # whether this request still counts in server.in_flight

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one stderr line per request would drown test and benchmark output

    def do_GET(self) -> None:
        self.server.touch()
        path = urlsplit(self.path).path
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/stats":
            self._send_json(200, self.server.snapshot())
        else:
            self._send_error(404, "not_found_error", f"no route for GET {path}")

    def do_POST(self) -> None:
        srv, path = self.server, urlsplit(self.path).path
        srv.touch()
        if path in API_PATHS:
            self._serve_api(path)
            return
        with srv.lock:
            srv.paths[path] += 1
        if self._read_body() is None:
            return
        if path == "/reset_stats":
            with srv.lock:
                srv.reset_stats()
            self._send_json(200, {"status": "ok"})
        elif path == "/shutdown":
            self.close_connection = True
            self._send_json(200, {"status": "stopping"})
            srv.stop_event.set()  # the main thread notices and shuts the server down
        else:
            self._send_error(404, "not_found_error", f"no route for POST {path}")

    def _serve_api(self, path: str) -> None:
        srv, auth = self.server, self.headers.get("Authorization")
        with srv.lock:
            srv.requests, srv.in_flight = srv.requests + 1, srv.in_flight + 1
            srv.paths[path] += 1
            srv.peak_in_flight = max(srv.peak_in_flight, srv.in_flight)
            if auth is not None:  # only a digest: the server never keeps the key itself
                srv.auth_sha256.add(hashlib.sha256(auth.encode()).hexdigest())
        self._counted = True
        try:
            self._answer_api(path)
        finally:
            self._leave()
            with srv.lock:
                srv.served, srv.last_activity = srv.served + 1, time.monotonic()
                if srv.served >= srv.cfg["max_requests"]:
                    srv.stop_event.set()  # after the reply was written, so the last client gets it

    def _leave(self) -> None:
        # Runs just before the reply is written: a client that has its reply and then reads
        # /stats must not see its own request still in flight.
        if self._counted:
            self._counted = False
            with self.server.lock:
                self.server.in_flight -= 1

    def _answer_api(self, path: str) -> None:
        srv, body = self.server, self._read_body()
        if body is None:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._send_error(400, "invalid_request_error", "request body must be a JSON object")
            return
        prompt = _prompt_text(payload)
        kind = srv.pick_fault(prompt)
        with srv.lock:
            srv.last_request = payload
            if kind is not None:
                srv.faults[kind] += 1
        if srv.capacity is None:
            self._reply(path, payload, prompt, kind)
            return
        while not srv.capacity.acquire(timeout=0.2):  # poll, so shutdown is not blocked
            if srv.stop_event.is_set():
                self._send_error(503, "server_error", "fault server is shutting down")
                return
        try:
            self._reply(path, payload, prompt, kind)
        finally:
            srv.capacity.release()

    def _reply(self, path: str, payload: dict[str, Any], prompt: str, kind: str | None) -> None:
        srv, cfg = self.server, self.server.cfg
        if kind == "drop":
            self._leave()
            self.close_connection = True  # BaseHTTPRequestHandler must not read or write again
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif kind in _ERROR_FAULTS:
            status, error_type, message = _ERROR_FAULTS[kind]
            headers = {"Retry-After": f"{cfg['retry_after_s']:g}"} if kind == "http_429" else None
            self._send_error(status, error_type, message, headers)
        elif kind == "malformed_json":
            self._send_bytes(200, b'{"choices": [')
        else:
            srv.sleep(cfg["slow_s"] if kind == "slow" else cfg["service_time_s"])
            with srv.lock:
                srv.next_id += 1
                n = srv.next_id
            build = _chat_body if path == API_PATHS[0] else _responses_body
            model = payload["model"] if isinstance(payload.get("model"), str) else "fault-server"
            text = _reply_text(cfg, prompt, kind)
            self._send_json(200, build(n, model, text, cfg["reasoning_text"], prompt, kind == "empty_choices"))

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400/413 (and closing the connection)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= self.server.cfg["max_body_bytes"]:
            return self.rfile.read(length)
        while 0 < length <= _DRAIN_LIMIT:  # read it away, or the client may see a reset, not the 413
            chunk = self.rfile.read(min(length, 1 << 16))
            length = length - len(chunk) if chunk else 0
        self.close_connection = True
        self._send_error(400 if length < 0 else 413, "invalid_request_error", "bad or too large Content-Length")
        return None

    def _send_error(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": error_type, "code": status}}, headers)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), headers)

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self._leave()
        try:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                **(headers or {})}.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (e.g. timed out on a slow fault): nobody to tell
            self.close_connection = True


def serve(port: int, cfg: dict[str, Any]) -> int:
    """Serve until idle, max_requests, parent death, SIGTERM or POST /shutdown; return 0."""
    srv = _FaultHTTPServer(port, cfg)
    signal.signal(signal.SIGTERM, lambda *_: srv.stop_event.set())
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    parent = os.getppid()
    print(f"PORT {srv.server_address[1]}", flush=True)
    reason = "shutdown requested"
    while not srv.stop_event.wait(0.5):
        if os.getppid() != parent:  # reparented: whoever started us is gone
            reason = "parent exited"
        elif srv.idle_for() >= cfg["idle_timeout_s"]:
            reason = f"idle for {cfg['idle_timeout_s']:g} s"
        else:
            continue
        break
    srv.stop_event.set()  # wakes slow replies and capacity waiters
    srv.shutdown()
    srv.server_close()
    print(f"fault_server: stopped ({reason}; {srv.served} API requests)", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fault-injecting OpenAI-compatible test server (loopback only).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--config", default="{}", help="JSON object of config keys (see DEFAULTS)")
    args = parser.parse_args(argv)
    try:
        cfg = validate_config(json.loads(args.config))
    except ValueError as exc:
        parser.error(str(exc))
    return serve(args.port, cfg)


if __name__ == "__main__":
    sys.exit(main())
