"""The guard against bf16 weights stepped in place at an lr they cannot resolve."""
import lightning.pytorch as pl
import pytest
import torch

from qed_lightning.judging import RuleJudge
from qed_lightning.modules import GRPOModule, SFTModule
from qed_lightning.modules.rl_settings import EngineSettings
from qed_lightning.optim.precision_guard import check_update_resolution, half_ulp, resolvable_counts

# bf16 keeps 8 significant bits: half an ulp at |x| in [2^k, 2^(k+1)) is 2^(k-8)
VALUES = [1.0, -0.5, 0.02, 2**-11, 2**-12, -(2**-12), 0.0]
HALF_ULPS = [2**-8, 2**-9, 2**-14, 2**-19, 2**-20, 2**-20, 2**-134]  # 0: half the subnormal spacing 2^-133


def zero_rule(problem, answer):
    return 0


def test_half_ulp_exact_values_in_bf16_and_fp16():
    assert half_ulp(torch.tensor(VALUES, dtype=torch.bfloat16)).tolist() == HALF_ULPS
    # fp16: 11 significant bits; below 2^-14 the spacing is the subnormal 2^-24
    assert half_ulp(torch.tensor([1.0, 0.02, 1e-7], dtype=torch.float16)).tolist() == [2**-11, 2**-17, 2**-25]
    assert half_ulp(torch.tensor([1.0], dtype=torch.float32)).tolist() == [2**-24]


def test_half_ulp_is_where_rounding_to_nearest_stops_erasing_an_update():
    x = torch.tensor(VALUES[:5], dtype=torch.bfloat16)  # [5]
    away = x.double().sign() * half_ulp(x)  # [5]: away from zero (toward it, at a power of 2, the gap halves)
    below = (x.double() + 0.9 * away).to(torch.bfloat16)
    above = (x.double() + 1.1 * away).to(torch.bfloat16)
    assert torch.equal(below, x) and bool((above != x).all())


def test_resolvable_share_counts_trainable_elements_exactly():
    w = torch.nn.Parameter(torch.tensor(VALUES, dtype=torch.bfloat16))  # [7]
    frozen = torch.zeros(5, dtype=torch.bfloat16)  # requires no grad: not counted
    # lr 1e-6: only 2^-12, -2^-12 (half-ulp 2^-20 = 9.5e-7) and 0 can move
    assert resolvable_counts([w, frozen], 1e-6) == (3, 7)
    assert resolvable_counts([w], 2**-19) == (4, 7)  # half-ulp == lr counts
    assert resolvable_counts([w], 2**-8) == (7, 7)
    assert resolvable_counts([w.detach().float().requires_grad_()], 1e-6) == (7, 7)  # fp32: all


def bf16_weights(n=10_000):
    g = torch.Generator().manual_seed(0)
    return torch.nn.Parameter((torch.randn(n, generator=g) * 0.02).to(torch.bfloat16))  # [n]


def test_refuses_paper_lr_on_bf16_weights_and_names_the_settings():
    w = bf16_weights()
    resolvable, total = resolvable_counts([w], 1e-6)
    with pytest.raises(ValueError) as err:
        check_update_resolution([w], optimizer="adamw", lr=1e-6, model_dtype="bfloat16", precision="bf16-true")
    msg = str(err.value)
    for part in ("model.lr=1e-06", "model.dtype='bfloat16'", "trainer.precision='bf16-true'", "'adamw'",
                 f"only {resolvable / total:.1%}", "trainer.precision: bf16-mixed", "model.dtype: float32"):
        assert part in msg, part
    assert 0.01 < resolvable / total < 0.03  # ~2% of N(0, 0.02) weights have |w| < 2^-11
    with pytest.raises(ValueError, match="only 30"):  # SFT's 3e-5: |w| < 2^-7, ~30%
        check_update_resolution([w], optimizer="adamw_8bit", lr=3e-5, model_dtype="bfloat16", precision="bf16-true")


def test_passes_fp32_weights_large_lrs_and_other_optimizers():
    w = bf16_weights()
    fp32 = torch.nn.Parameter(w.detach().float())
    assert check_update_resolution([fp32], optimizer="adamw", lr=1e-6, model_dtype="float32",
                                   precision="bf16-mixed") == 1.0
    share = check_update_resolution([w], optimizer="adamw", lr=1e-4, model_dtype="bfloat16", precision="bf16-true")
    assert 0.85 < share < 0.9  # |w| < 2^-5
    assert check_update_resolution([w], optimizer="kahan_adamw", lr=1e-6, model_dtype="bfloat16",
                                   precision="bf16-true") is None


def test_the_decision_uses_the_counts_of_every_rank():
    # This rank's shard alone: 3 of 7 can move (43%, refused); with another rank's
    # shard of 7 movable elements the model's share is 10 of 14 (71%).
    w = torch.nn.Parameter(torch.tensor(VALUES, dtype=torch.bfloat16))
    with pytest.raises(ValueError):
        check_update_resolution([w], optimizer="adamw", lr=1e-6, model_dtype="bfloat16", precision="bf16-true")
    share = check_update_resolution([w], optimizer="adamw", lr=1e-6, model_dtype="bfloat16", precision="bf16-true",
                                    reduce=lambda counts: counts + torch.tensor([7.0, 7.0], dtype=torch.float64))
    assert share == 10 / 14


def _rl(tiny_model_dir, dtype, lr):
    return GRPOModule(model=str(tiny_model_dir), judge=RuleJudge(f"{__name__}:zero_rule"), dtype=dtype, lr=lr,
                      engine=EngineSettings(backend="hf"))


def _sft(tiny_model_dir, dtype, lr):
    return SFTModule(model=str(tiny_model_dir), dtype=dtype, lr=lr, loss="chunked")


@pytest.mark.parametrize("make", [_rl, _sft], ids=["rl", "sft"])
def test_modules_refuse_before_the_first_step(make, tiny_model_dir, tmp_path):
    def trainer(precision):
        return pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)

    with pytest.raises(ValueError, match=r"model.dtype='bfloat16' and trainer.precision='bf16-true'"):
        trainer("bf16-true").fit(make(tiny_model_dir, "bfloat16", 1e-6), train_dataloaders=[0])
    # bf16-true converts fp32-loaded weights to bf16 before the optimizer is built: still refused
    with pytest.raises(ValueError, match=r"model.dtype='float32' and trainer.precision='bf16-true'"):
        trainer("bf16-true").fit(make(tiny_model_dir, "float32", 1e-6), train_dataloaders=[0])
