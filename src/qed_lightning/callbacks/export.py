"""Hugging Face–format export of the policy at the end of ``fit``."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from qed_lightning.callbacks.preemption import preempted
from qed_lightning.engines.full_weights import is_sharded, iter_full_weights
from qed_lightning.export import save_hf_export


class HFExportCallback(Callback):
    """Writes ``<log_dir>/<dirname>`` when training ends. A sharded policy (FSDP) is
    gathered one parameter at a time by every rank and written by rank 0 (writing the
    sharded model from rank 0 alone would wait for ranks that never join its gathers).

    Args:
        enabled: Set False to skip the export.
        dirname: Folder name under the run's log directory.
    """

    def __init__(self, enabled: bool = True, dirname: str = "hf_export") -> None:
        self.enabled = enabled
        self.dirname = dirname
        self.export_dir: Path | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.enabled or preempted(trainer):
            return  # a preempted run is not finished: its requeued start exports at the end
        out = Path(trainer.log_dir or trainer.default_root_dir) / self.dirname
        policy = pl_module.policy
        state_dict = None
        if is_sharded(policy):
            # every rank takes part in each gather (one parameter at a time); rank 0 keeps
            # the full tensors on the CPU and writes them
            state_dict = _gathered_on_rank_zero(policy, trainer.is_global_zero)
        if trainer.is_global_zero:
            self.export_dir = save_hf_export(policy, pl_module.tokenizer, out, state_dict=state_dict)
        trainer.strategy.barrier("hf_export")


def _gathered_on_rank_zero(policy, keep: bool) -> dict | None:
    state: dict = {}
    last_gathered = last_copy = None
    for name, tensor in iter_full_weights(policy):
        if keep:
            if tensor is not last_gathered:  # tied names come in a row and share one tensor
                last_gathered, last_copy = tensor, tensor.to("cpu", copy=True)
            state[name] = last_copy
    return state if keep else None
