"""Parent-side handle of the fault-injecting server (``fault_server.py``): start it in its
own process, read its stats, stop it."""
from __future__ import annotations

import collections
import http.client
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from qed_lightning.testing.fault_server import validate_config

__all__ = ["FaultServer"]

SERVER_FILE = Path(__file__).with_name("fault_server.py")

# Loads the server file by path rather than `-m qed_lightning.testing.fault_server`, so
# the child runs no package __init__ and imports only the standard library: a start
# costs no more than the server itself, whatever the package imports grow to.
_BOOTSTRAP = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
              "import importlib.util\n"
              "spec = importlib.util.spec_from_file_location('_qed_fault_server', sys.argv[1])\n"
              "module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module\n"
              "spec.loader.exec_module(module); sys.exit(module.main(sys.argv[2:]))\n")


class FaultServer:
    """Parent-side handle: ``with FaultServer(fault_rate=0.1) as srv: ... srv.base_url ...``."""

    START_TIMEOUT_S = 30.0

    def __init__(self, **config: Any) -> None:
        validate_config(config)  # fail fast here rather than as a child's exit status
        self.config = config
        self.process: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=200)
        self._reader: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def output(self) -> str:
        """The child's last lines of stdout and stderr (for diagnostics)."""
        return "".join(self._output)

    def start(self) -> FaultServer:
        if self.process is not None:
            raise RuntimeError("FaultServer already started")
        cmd = [sys.executable, "-c", _BOOTSTRAP, str(SERVER_FILE),
               "--port", "0", "--config", json.dumps(self.config)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        self._reader = threading.Thread(target=self._drain, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(self.START_TIMEOUT_S) or self.port is None:
            self.stop()
            raise RuntimeError(f"fault server did not start (exit code {self.process.returncode}):\n{self.output}")
        return self

    def _drain(self, ready: threading.Event) -> None:
        # Keep reading after PORT: a full pipe would block the child on its next write.
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._output.append(line)
            if self.port is None and line.startswith("PORT "):
                self.port = int(line.split()[1])
                ready.set()
        ready.set()

    def _request(self, method: str, path: str, timeout: float = 10.0) -> dict[str, Any]:
        # http.client, not urllib: urllib would route 127.0.0.1 through any HTTP(S)_PROXY.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=b"" if method == "POST" else None)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"fault server {method} {path} -> {response.status}: {body[:200]!r}")
        return json.loads(body)

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/stats")

    def reset_stats(self) -> None:
        self._request("POST", "/reset_stats")

    def stop(self) -> None:
        """Ask the server to stop, then terminate, then kill; safe to call more than once."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None and self.port is not None:
            try:
                self._request("POST", "/shutdown", timeout=2.0)
            except (OSError, http.client.HTTPException, RuntimeError):
                pass  # it may be hung or already gone; escalate below
        for escalate in (lambda: None, proc.terminate, proc.kill):
            escalate()
            try:
                proc.wait(timeout=5.0)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        if proc.stdout is not None and not (self._reader and self._reader.is_alive()):
            proc.stdout.close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
