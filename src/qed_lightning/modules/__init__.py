"""LightningModules: wiring of model, loss and optimizer for each training stage."""
from qed_lightning.modules.sft import SFTModule

__all__ = ["SFTModule"]
