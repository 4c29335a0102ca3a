"""The environment for a launched `qed fit`, without the distributed-launch variables
this test process may have picked up: an in-process vLLM engine or Lightning run sets
LOCAL_RANK, MASTER_ADDR/PORT, LOCAL_WORLD_SIZE... in os.environ, and a child that
inherits LOCAL_RANK believes an external launcher started it (Lightning then does not
start the other ranks, and rank 0 waits for them forever)."""
from __future__ import annotations

import os

LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
                    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def launcher_free_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    env.update(extra)
    return env
