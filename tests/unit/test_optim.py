import math

import pytest
import torch

from qed_lightning.optim import (OPTIMIZERS, ROUNDS_UPDATES_TO_PARAM_DTYPE, build_optimizer, build_scheduler,
                                 constant_with_warmup, cosine_with_warmup)


def test_cosine_with_warmup_hand_values():
    f = lambda s: cosine_with_warmup(s, total_steps=10, warmup_steps=2)  # noqa: E731
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)
    # halfway through the 8 decay steps: cos(pi/2) -> 0.5
    assert f(6) == pytest.approx(0.5)
    assert f(10) == pytest.approx(0.0, abs=1e-12)
    assert cosine_with_warmup(4, total_steps=4, warmup_steps=0) == pytest.approx(0.0, abs=1e-12)


def test_constant_with_warmup():
    assert [constant_with_warmup(s, total_steps=5, warmup_steps=2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_scheduler_drives_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer("adamw", [p], lr=1.0, weight_decay=0.0)
    sched = build_scheduler("cosine", opt, total_steps=4, warmup_ratio=0.25)  # 1 warmup step
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'sgdx'"):
        build_optimizer("sgdx", [], lr=1.0, weight_decay=0.0)
    opt = build_optimizer("adamw", [torch.nn.Parameter(torch.zeros(1))], lr=1.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        build_scheduler("linearx", opt, total_steps=3, warmup_ratio=0.0)


def test_adamw_8bit_steps_on_cpu():
    p = torch.nn.Parameter(torch.ones(64, 64))
    opt = build_optimizer("adamw_8bit", [p], lr=0.1, weight_decay=0.0)
    p.grad = torch.ones_like(p)
    opt.step()
    assert torch.all(p < 1.0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_that_lose_sub_ulp_updates_on_bf16_weights_are_listed_for_the_guard(name):
    """``precision_guard`` checks the optimizers in ROUNDS_UPDATES_TO_PARAM_DTYPE: each
    registered optimizer whose steps of lr 1e-6 leave bf16 weights of 0.02 (half-ulp
    6.1e-5) unchanged must be listed there; at lr 1e-3 the same weights do move."""
    def stepped(lr):
        p = torch.nn.Parameter(torch.full((64, 64), 0.02, dtype=torch.bfloat16))
        opt = build_optimizer(name, [p], lr=lr, weight_decay=0.0)
        p.grad = torch.ones_like(p)
        for _ in range(3):
            opt.step()
        return p

    assert bool((stepped(1e-3) < 0.02).all())
    if bool((stepped(1e-6) == 0.02).all()):
        assert name in ROUNDS_UPDATES_TO_PARAM_DTYPE
