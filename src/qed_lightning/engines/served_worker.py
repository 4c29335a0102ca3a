"""A vLLM worker extension that makes a served policy's weight version checkable.

Started with ``vllm serve ... --worker-extension-cls
qed_lightning.engines.served_worker.WeightVersionExtension`` (and
``VLLM_SERVER_DEV_MODE=1`` for the ``/collective_rpc`` route), each worker of the
server can reload weights from a directory and remembers which version it loaded.
The trainer asks every worker for its version around each generation call, so
completions from a server that missed a push, restarted on old weights, or was
reloaded by someone else are stamped with the version it really served.

This module is imported inside the vLLM server process; it imports nothing heavy.
"""
from __future__ import annotations

__all__ = ["WeightVersionExtension", "UNKNOWN_VERSION"]

UNKNOWN_VERSION = -1  # a server that has not received a push since it started


class WeightVersionExtension:
    """Mixed into vLLM's worker class; the HTTP route passes arguments as strings."""

    def qed_load_weights(self, weights_path: str, version: str) -> int:
        """Reloads every weight in place from ``weights_path`` (safetensors files)."""
        # The version is recorded as unknown first: a reload that fails halfway must
        # not leave the previous version claimed for a half-updated model.
        self.qed_weight_version_value = UNKNOWN_VERSION
        self.reload_weights(weights_path=weights_path, is_checkpoint_format=True)
        self.qed_weight_version_value = int(version)
        return self.qed_weight_version_value

    def qed_weight_version(self) -> int:
        return getattr(self, "qed_weight_version_value", UNKNOWN_VERSION)
