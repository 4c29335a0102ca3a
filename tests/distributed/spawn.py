"""Run a function on N gloo ranks in fresh processes (the way a launcher would)."""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, timeout_s: float | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    timeout = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group("gloo", rank=rank, world_size=world, **timeout)
    fn(rank, world, *args)
    # an orderly exit: no rank tears its connections down while another still uses them
    dist.barrier()
    dist.destroy_process_group()


def run_on_ranks(fn, world: int = 2, *args, timeout_s: float | None = None) -> None:
    """``fn(rank, world, *args)`` on every rank; an assertion on any rank fails the call.
    ``timeout_s``: the process group's timeout (a rank left waiting in a collective
    fails after it instead of hanging)."""
    mp.spawn(_entry, args=(world, free_port(), fn, args, timeout_s), nprocs=world, join=True)
