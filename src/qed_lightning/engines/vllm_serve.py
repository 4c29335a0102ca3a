"""Start and stop a ``vllm serve`` (OpenAI-compatible server) as a child process.

For a judge or a summarizer on its own server on this machine (and for the tests of
the HTTP paths). Starts ``python -m vllm.entrypoints.openai.api_server`` on
127.0.0.1 at a free port, waits for ``/health``, and stops the whole process group;
the server's output goes to a log file whose tail is shown if it fails to start.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

__all__ = ["VLLMServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``with VLLMServer(model_dir) as server: ... server.base_url ...``

    Args:
        model: Local model directory or hub id.
        served_name: The name clients put in ``model``.
        max_model_len: Context length (prompts beyond it are refused with HTTP 400).
        dtype: Weights dtype (``auto``, ``bfloat16``, ``float32``).
        kv_cache_gib: KV-cache space on CPU builds (``VLLM_CPU_KVCACHE_SPACE``); the
            default would reserve far more than a test needs.
        extra_args: More ``vllm serve`` flags.
        startup_timeout_s: How long to wait for ``/health``.
        log_path: Where the server's output goes (a temporary file by default).
        env: More environment variables for the server process.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        served_name: str = "judge",
        max_model_len: int = 2048,
        dtype: str = "auto",
        kv_cache_gib: int = 1,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 300.0,
        log_path: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.model, self.served_name = str(model), served_name
        self.max_model_len, self.dtype, self.kv_cache_gib = max_model_len, dtype, kv_cache_gib
        self.extra_args, self.startup_timeout_s = list(extra_args), startup_timeout_s
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")[1])
        self.env = dict(env or {})
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "VLLMServer":
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
            "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", str(self.max_model_len), "--dtype", self.dtype, "--enforce-eager",
            *self.extra_args,
        ]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), **self.env}
        log = self.log_path.open("wb")
        # Own process group: vLLM starts engine workers that must go down with it.
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self._proc.returncode}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vllm serve not healthy after {self.startup_timeout_s:g} s:\n{self._log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
