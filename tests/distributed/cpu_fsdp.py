"""Lightning's ``FSDPStrategy`` (FSDP1) on CPU gloo ranks, for tests.

Lightning refuses ``FSDPStrategy`` without CUDA (the check compares the exact class, so
a subclass passes it) and hands FSDP a device index, which is None on CPU; FSDP1 itself
runs on CPU given ``device_id=cpu``. Everything else is Lightning's own: the module is
wrapped the same way, in one unit around the whole LightningModule."""
from __future__ import annotations

import torch
from lightning.pytorch.strategies import FSDPStrategy


class CPUFSDPStrategy(FSDPStrategy):
    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = FullyShardedDataParallel(model, cpu_offload=self.cpu_offload,
                                           mixed_precision=self.mixed_precision_config,
                                           sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"),
                                           **self.kwargs)
        return super()._setup_model(wrapped)  # already wrapped: Lightning keeps it and does the rest
