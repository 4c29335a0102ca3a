"""A push into an engine all ranks share: rank 0 pushes, the others walk the stream
(whose items take collectives, like FSDP gathers). A failure on rank 0 raises on every
rank, promptly, with the collectives still matched."""
import pytest
import torch
import torch.distributed as dist

from qed_lightning.modules.collective_steps import WeightPushError, push_from_rank_zero

from .spawn import run_on_ranks


def _stream(n):
    for i in range(n):
        t = torch.tensor([float(i)])
        dist.all_reduce(t)  # a gather: every rank must take part in each item
        yield f"w{i}", t


def _any_rank(flag):
    t = torch.tensor([int(flag)])
    dist.all_reduce(t)
    return bool(t.item())


def _push_fails_on_rank_zero(rank, world):
    received = []

    def push(weights):
        for name, tensor in weights:
            received.append(name)
            if name == "w1":
                raise ConnectionError("server went away")

    expected = ConnectionError if rank == 0 else WeightPushError
    with pytest.raises(expected):
        push_from_rank_zero(_stream(4), push, rank == 0, _any_rank)
    assert received == (["w0", "w1"] if rank == 0 else [])
    after = torch.tensor([1.0])
    dist.all_reduce(after)  # collectives are still in step after the failure
    assert after.item() == world


def _push_succeeds(rank, world):
    received = {}
    push_from_rank_zero(_stream(3), lambda w: received.update(w), rank == 0, _any_rank)
    assert sorted(received) == (["w0", "w1", "w2"] if rank == 0 else [])
    mapping = {"a": torch.zeros(1)}  # unsharded: the state dict itself, untouched elsewhere
    got = []
    push_from_rank_zero(mapping, got.append, rank == 0, _any_rank)
    assert got == ([mapping] if rank == 0 else [])


def test_a_failed_push_on_rank_zero_raises_on_every_rank():
    run_on_ranks(_push_fails_on_rank_zero, 2)


def test_a_push_reaches_the_engine_once():
    run_on_ranks(_push_succeeds, 2)
