"""Generation on ``vllm serve`` processes (other GPUs or nodes) behind the
:class:`RolloutEngine` contract, with weights pushed through a shared filesystem.

After each optimizer step the trainer writes the full weights to
``<weights_dir>/v<step>/`` and asks every server to reload them from there
(``/collective_rpc`` -> :class:`WeightVersionExtension`); each server's workers then
report the version they hold. Around every generation call the engine asks each
server for its version, and every completion is stamped with the version its server
held before *and* after the call (``UNKNOWN_VERSION`` when those differ), so a server
that missed a push, restarted on its initial weights, or was reloaded by another
run produces completions the producer's on-policy check refuses. Pushing weights
over NCCL from the trainer is not implemented.

Servers must run with (see :func:`served_policy_args`): ``--worker-extension-cls
qed_lightning.engines.served_worker.WeightVersionExtension``, ``--logprobs-mode
processed_logprobs`` and ``--generation-config vllm`` (the same distribution the
trainer assumes), and ``VLLM_SERVER_DEV_MODE=1`` in their environment. Every EOS id
the policy's checkpoint declares is sent with each request (``stop_token_ids``), so
a completion stops at each of them whatever generation config the server started with.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping, Sequence

import httpx
import torch

from qed_lightning.contracts import Completion, SamplingSettings
from qed_lightning.engines.eos import declared_eos_ids
from qed_lightning.engines.served_worker import UNKNOWN_VERSION
from qed_lightning.engines.weight_export import prune_weight_versions, write_weight_version
from qed_lightning.engines.weights import checkpoint_tensor_names

__all__ = ["ServedEngine", "ServedEngineError", "served_policy_args"]

SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
log = logging.getLogger(__name__)


def served_policy_args() -> list[str]:
    """The ``vllm serve`` flags a served policy needs (on top of model, port, dtype...)."""
    return ["--worker-extension-cls", "qed_lightning.engines.served_worker.WeightVersionExtension",
            "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm"]


class ServedEngineError(RuntimeError):
    """A server that stayed unreachable or failed after the retries."""


class ServedEngine:
    """Args:
        base_urls: Server roots (``http://host:port``, no ``/v1``); a call's prompts are
            spread over them round-robin (whole groups per server).
        model: The name the servers serve the policy under.
        weights_dir: A directory the trainer writes and every server reads.
        model_dir: The policy's checkpoint directory: the tensor names a push must
            carry and the EOS ids every request stops at (None: neither is checked
            or sent; the servers stop at what their model declares).
        max_model_len: The servers' context (prompt + completion).
        timeout_s: Per request; generation of a long completion must fit in it.
        sync_timeout_s: Per weight reload.
        max_attempts: Tries of a request in all, the first included, on connection
            errors and HTTP 5xx.
        max_concurrency: Requests in flight at once.
        keep_versions: Exported versions kept on disk.
    """

    # One set of servers for all ranks: rank 0 pushes the weights (see GRPOModule).
    shared_by_ranks = True

    def __init__(self, base_urls: Sequence[str], model: str = "policy", weights_dir: str = "served_weights",
                 model_dir: str | None = None, max_model_len: int = 4096, timeout_s: float = 3600.0,
                 sync_timeout_s: float = 600.0, max_attempts: int = 4, max_concurrency: int = 256,
                 keep_versions: int = 2) -> None:
        if not base_urls:
            raise ValueError("ServedEngine needs at least one server URL (engine.base_urls)")
        self.base_urls = [u.rstrip("/").removesuffix("/v1") for u in base_urls]
        self.model, self.weights_dir, self.max_model_len = model, weights_dir, max_model_len
        if max_attempts < 1:
            raise ValueError(f"ServedEngine max_attempts (tries in all, the first included) must be >= 1, "
                             f"got {max_attempts}")
        self.timeout_s, self.sync_timeout_s, self.max_attempts = timeout_s, sync_timeout_s, max_attempts
        self.keep_versions = max(1, keep_versions)
        self._expected = checkpoint_tensor_names(model_dir) if model_dir else None
        self.eos_ids = declared_eos_ids(str(model_dir)) if model_dir else []
        self._http = httpx.Client(limits=httpx.Limits(max_connections=max_concurrency), timeout=httpx.Timeout(timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="qed-served")
        self.weight_version = UNKNOWN_VERSION
        self.last_sync: dict[str, float] = {}
        self.retries = 0  # requests retried so far (the step log reports it: rollout/engine_retries)
        self._retries_lock = threading.Lock()  # requests run on a thread pool

    # ------------------------------------------------------------------ HTTP

    def _post(self, url: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        for attempt in range(self.max_attempts):
            try:
                resp = self._http.post(url, json=body, timeout=timeout or self.timeout_s)
                if resp.status_code < 500:
                    if resp.status_code >= 400:  # the request itself is wrong: retrying will not help
                        raise ServedEngineError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
                    return resp.json() if resp.content else None
                problem = f"HTTP {resp.status_code}: {resp.text[:300]}"
            except httpx.TransportError as err:  # refused, reset, timed out
                problem = f"{type(err).__name__}: {err}"
            if attempt < self.max_attempts - 1:
                with self._retries_lock:
                    self.retries += 1
                log.warning("%s: %s; retrying (attempt %d of %d)", url, problem, attempt + 2, self.max_attempts)
                time.sleep(min(30.0, random.uniform(0, 2 ** attempt)))
        raise ServedEngineError(f"{url}: failed after {self.max_attempts} attempts: {problem}")

    def _rpc(self, base: str, method: str, timeout: float, **kwargs: str) -> list:
        data = self._post(f"{base}/collective_rpc", {"method": method, "kwargs": kwargs, "timeout": timeout},
                          timeout=timeout + 30)
        return data["results"] if data else []

    @property
    def weights_dir_path(self) -> Path:
        return Path(self.weights_dir)

    def server_versions(self) -> list[int]:
        """The weight version each server holds (``UNKNOWN_VERSION`` if its workers disagree)."""
        versions = []
        for base in self.base_urls:
            per_worker = {int(v) for v in self._rpc(base, "qed_weight_version", 60.0)}
            versions.append(per_worker.pop() if len(per_worker) == 1 else UNKNOWN_VERSION)
        return versions

    # ------------------------------------------------------------------ sampling

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings,
                 sample_seeds: Sequence[Sequence[int]] | None = None, regex: str | None = None
                 ) -> list[list[Completion]]:
        """Same contract as ``VLLMEngine.generate``; see the module docstring for the stamp."""
        jobs = []  # (prompt index, server index, seed or None, n)
        for i, ids in enumerate(prompts):
            if len(ids) == 0 or len(ids) >= self.max_model_len:
                raise ValueError(f"prompt {i} has {len(ids)} tokens; the servers take 1..{self.max_model_len - 1}")
            server = i % len(self.base_urls)
            if sample_seeds is None:
                jobs.append((i, server, sampling.seed, sampling.n))
            else:
                if len(sample_seeds[i]) != sampling.n:
                    raise ValueError(f"prompt {i}: {len(sample_seeds[i])} seeds for n={sampling.n} samples")
                jobs += [(i, server, seed, 1) for seed in sample_seeds[i]]
        before = self.server_versions()
        replies = list(self._pool.map(lambda job: self._complete(prompts[job[0]], sampling, job[2], job[3], regex,
                                                                 self.base_urls[job[1]]), jobs))
        after = self.server_versions()
        stamp = [b if b == a else UNKNOWN_VERSION for b, a in zip(before, after)]
        groups: list[list[Completion]] = [[] for _ in prompts]
        for (i, server, _, _), choices in zip(jobs, replies):
            for choice in choices:
                groups[i].append(_completion(prompts[i], choice, stamp[server]))
        return groups

    def _complete(self, ids, s: SamplingSettings, seed, n, regex, base) -> list[dict]:
        body = {"model": self.model, "prompt": list(ids), "n": n, "temperature": s.temperature, "top_p": s.top_p,
                "top_k": s.top_k if s.top_k and s.top_k > 0 else -1, "min_p": 0.0, "repetition_penalty": 1.0,
                "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_tokens": s.max_tokens,
                "stop": list(s.stop) or None, "stop_token_ids": list(self.eos_ids) or None, "seed": seed,
                "logprobs": 0, "return_token_ids": True,
                "skip_special_tokens": True}
        if regex:
            body["structured_outputs"] = {"regex": regex}
        return self._post(f"{base}/v1/completions", body)["choices"]

    # ------------------------------------------------------------------ weights

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                     version: int) -> None:
        """Exports ``version`` to the shared directory, has every server reload it,
        and checks that each now reports it."""
        start = time.perf_counter()
        path = write_weight_version(named_tensors, self.weights_dir, version, self._expected)
        written = time.perf_counter()
        for base in self.base_urls:
            self._rpc(base, "qed_load_weights", self.sync_timeout_s, weights_path=str(path), version=str(version))
            # its KV came from the old weights; vLLM refuses while blocks are held
            # (older servers answer without a body and cannot be checked)
            reply = self._post(f"{base}/reset_prefix_cache", {}, timeout=60.0)
            if isinstance(reply, dict) and reply.get("success") is False:
                raise ServedEngineError(
                    f"{base}: did not reset its prefix cache after loading weight version {version} "
                    "(KV blocks still held, e.g. by requests from another client): cached KV from the "
                    "old weights would be reused")
        versions = self.server_versions()
        if any(v != version for v in versions):
            raise ServedEngineError(f"after pushing version {version} the servers report {versions}")
        self.weight_version = version
        prune_weight_versions(self.weights_dir, version - self.keep_versions + 1)
        done = time.perf_counter()
        self.last_sync = {"sync/seconds": done - start, "sync/export_s": written - start, "sync/reload_s": done - written}

    def sleep(self) -> None:
        """The servers keep their memory: they are not on the trainer's GPUs."""

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """No-op (see :meth:`sleep`)."""

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()


def _completion(prompt_ids, choice: dict, version: int) -> Completion:
    token_ids = list(choice.get("token_ids") or [])
    logprobs = list((choice.get("logprobs") or {}).get("token_logprobs") or [])
    if len(logprobs) != len(token_ids):
        raise ServedEngineError(f"server returned {len(token_ids)} tokens but {len(logprobs)} log-probs "
                                "(is it a vLLM server with return_token_ids support?)")
    return Completion(prompt_ids=list(prompt_ids), completion_ids=token_ids, logprobs=[float(x) for x in logprobs],
                      finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                      text=choice.get("text") or "", weight_version=version)
