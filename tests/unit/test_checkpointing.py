import os
import random

import numpy as np
import pytest
import torch

from qed_lightning.checkpointing import AtomicCheckpointIO, CheckpointRegistry, RNGState
from qed_lightning.checkpointing import atomic_io


def test_atomic_save_keeps_previous_checkpoint_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.arange(4)}, path)

    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the temp file
        raise OSError("disk full (injected)")

    monkeypatch.setattr(atomic_io.torch, "save", crash_midway)
    with pytest.raises(OSError, match="injected"):
        io.save_checkpoint({"step": 2, "w": torch.arange(8)}, path)
    monkeypatch.undo()

    loaded = io.load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.arange(4))
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"], "temporary file left behind"


def test_atomic_save_replaces_on_success(tmp_path):
    path = tmp_path / "sub" / "a.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, path)
    assert io.load_checkpoint(path)["step"] == 2
    assert os.listdir(path.parent) == ["a.ckpt"]


class Counter:
    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def test_registry_round_trips_and_names_mismatches():
    reg = CheckpointRegistry()
    c = Counter()
    reg.register("stream", c)
    c.n = 7
    state = reg.state_dict()
    c.n = 0
    reg.load_state_dict(state)
    assert c.n == 7
    with pytest.raises(KeyError, match=r"missing \['stream'\]"):
        reg.load_state_dict({})
    with pytest.raises(KeyError, match=r"unexpected \['rc_pool'\]"):
        reg.load_state_dict({"stream": {"n": 1}, "rc_pool": {}})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("stream", Counter())
    with pytest.raises(TypeError, match="state_dict"):
        reg.register("bad", object())


def test_rng_state_restores_every_generator():
    rng = RNGState()
    state = rng.state_dict()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    rng.load_state_dict(state)
    again = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert first == again
