"""The rollout path: problems -> prompts -> engine -> judge -> RolloutBatch."""
from qed_lightning.rollouts.batch import RolloutBatch
from qed_lightning.rollouts.datamodule import ProblemBatch, RolloutDataModule

__all__ = ["ProblemBatch", "RolloutBatch", "RolloutDataModule"]
