"""Optimizers and learning-rate schedules by name (``optim.build``); ``optim.bnb`` is
the only bitsandbytes import, loaded only when ``adamw_8bit`` is chosen."""
from qed_lightning.optim.build import (OPTIMIZERS, ROUNDS_UPDATES_TO_PARAM_DTYPE, SCHEDULES, build_optimizer,
                                       build_scheduler, constant_with_warmup, cosine_with_warmup)

__all__ = [
    "OPTIMIZERS", "ROUNDS_UPDATES_TO_PARAM_DTYPE", "SCHEDULES", "build_optimizer", "build_scheduler",
    "constant_with_warmup", "cosine_with_warmup",
]
