"""Hugging Face–format export of the policy at the end of ``fit``."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from qed_lightning.callbacks.preemption import preempted
from qed_lightning.export import save_hf_export


class HFExportCallback(Callback):
    """Writes ``<log_dir>/<dirname>`` when training ends.

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
        if trainer.is_global_zero:
            self.export_dir = save_hf_export(pl_module.policy, pl_module.tokenizer, out)
        trainer.strategy.barrier("hf_export")
