"""Preemption: a signal asks for a save, the save happens where it is safe."""
from qed_lightning.preemption.signals import PreemptionRequest, preemption_request
from qed_lightning.preemption.slurm import requeue_job, slurm_job_id, slurm_log_version

__all__ = ["PreemptionRequest", "preemption_request", "requeue_job", "slurm_job_id", "slurm_log_version"]
