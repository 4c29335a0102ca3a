"""LightningModules: wiring of model, loss and optimizer for each training stage."""
from qed_lightning.modules.grpo import GRPOModule
from qed_lightning.modules.sft import SFTModule

__all__ = ["GRPOModule", "SFTModule"]
