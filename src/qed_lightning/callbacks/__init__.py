"""Lightning callbacks: things a run can do without (checkpoint cadence, export,
run metadata). Logic the training data depends on lives on the data path instead."""
from qed_lightning.callbacks.checkpoint import QedCheckpoint
from qed_lightning.callbacks.export import HFExportCallback
from qed_lightning.callbacks.preemption import PreemptionCallback
from qed_lightning.callbacks.run_metadata import RunMetadataCallback

__all__ = ["QedCheckpoint", "HFExportCallback", "PreemptionCallback", "RunMetadataCallback"]
