"""FSDP2 under ``trainer.precision: bf16-mixed`` (2 gloo ranks on CPU): the sharded
master weights stay fp32, each unit gathers and computes in bf16, and the gradients
are reduced in fp32. The reference is the same bf16 arithmetic on one process: each
rank's micro-batch through a bf16 copy of the model, its bf16 gradients upcast and
averaged in fp32. A reduction in bf16 would round that average (2^-9 relative), an
unsharded-dtype gather would compute in fp32: both miss the reference."""
from __future__ import annotations

import copy

import pytest
import torch

from tests.distributed.spawn import run_on_ranks

pytestmark = pytest.mark.slow


def _model():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg)


def _lm_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def _check(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from qed_lightning.modules.sharding import RootForward, shard_model

    model = _model()  # fp32: the master copy
    bf16 = copy.deepcopy(model)
    for p in bf16.parameters():  # parameters only, as the policy casts them: RoPE's inv_freq buffer stays fp32
        p.data = p.data.to(torch.bfloat16)
    ids = torch.randint(0, 128, (world, 16), generator=torch.Generator().manual_seed(1))  # [world, T]: a row per rank

    root = RootForward(model)
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",))
    shard_model(model, mesh, root=root, precision="bf16-mixed")
    computed_in = []
    model.model.layers[0].register_forward_pre_hook(lambda m, args: computed_in.append(m.mlp.up_proj.weight.dtype))
    root(_lm_loss, ids[rank:rank + 1]).backward()
    assert computed_in == [torch.bfloat16]

    per_rank = []
    for r in range(world):
        bf16.zero_grad()
        _lm_loss(bf16, ids[r:r + 1]).backward()
        per_rank.append({n: p.grad.float() for n, p in bf16.named_parameters()})
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name  # sharded master and its gradient
        want = sum(g[name] for g in per_rank) / world
        # same bf16 products, the same fp32 sum of two: equal up to an fp32 rounding
        torch.testing.assert_close(p.grad.full_tensor(), want, rtol=1e-6, atol=1e-10, msg=name)


def test_bf16_mixed_gathers_bf16_and_reduces_in_fp32():
    run_on_ranks(_check, 2)


def zero_rule(problem, answer):
    return 0


def _check_modules(rank: int, world: int, model_dir: str) -> None:
    from types import SimpleNamespace

    from torch.distributed.device_mesh import init_device_mesh

    from qed_lightning.judging import RuleJudge
    from qed_lightning.modules import GRPOModule, SFTModule
    from qed_lightning.modules.collective_steps import zero_loss
    from qed_lightning.modules.rl_settings import EngineSettings

    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",))
    sft = SFTModule(model=model_dir, loss="chunked")
    rl = GRPOModule(model=model_dir, judge=RuleJudge(f"{__name__}:zero_rule"), engine=EngineSettings(backend="hf"))
    for module, run in ((sft, lambda: sft.lm(None)), (rl, lambda: rl._policy_root(zero_loss))):
        module._trainer = SimpleNamespace(precision="bf16-mixed")  # all configure_model reads of the trainer
        module._device_mesh = mesh
        module.configure_model()
        computed_in = []
        module.policy.model.layers[0].register_forward_pre_hook(
            lambda m, args: computed_in.append(m.mlp.up_proj.weight.dtype))
        run()
        assert computed_in == [torch.bfloat16], type(module).__name__
        assert {p.dtype for p in module.policy.parameters()} == {torch.float32}, type(module).__name__


def test_modules_shard_with_the_trainers_precision(tiny_model_dir):
    """``configure_model`` of both modules hands the trainer's precision to ``shard_model``."""
    run_on_ranks(_check_modules, 1, str(tiny_model_dir))
