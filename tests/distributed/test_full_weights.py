"""Layer-by-layer full weights from FSDP shards (2 gloo ranks on CPU): every tensor
equals the unsharded model's, tied names included, and while one FSDP1 unit is
gathered the other units stay sharded (no second full copy of the model)."""
from __future__ import annotations

import pytest
import torch

from tests.distributed.spawn import run_on_ranks


def _model():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg)


def _check_fsdp1(rank: int, world: int, use_orig_params: bool) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    from qed_lightning.engines.full_weights import iter_full_weights

    model = _model()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Qwen3DecoderLayer}), use_orig_params=use_orig_params,
                   device_id=torch.device("cpu"))
    units = [m for m in wrapped.modules() if isinstance(m, FSDP) and m is not wrapped]
    assert len(units) == 3  # one per decoder layer

    def gathered(unit) -> bool:  # FSDP1 internals: the flat parameter holds the whole unit
        return not unit._handle.is_sharded(unit._handle.flat_param)

    got = {}
    for name, tensor in iter_full_weights(wrapped):
        got[name] = tensor.clone()
        open_units = [i for i, unit in enumerate(units) if gathered(unit)]
        if name.startswith("model.layers."):
            assert open_units == [int(name.split(".")[2])], (name, open_units)
        else:
            assert open_units == [], (name, open_units)
    assert set(got) == set(reference), sorted(set(got) ^ set(reference))
    for name, tensor in reference.items():
        assert torch.equal(got[name], tensor), name


def _check_fsdp2(rank: int, world: int) -> None:
    from torch.distributed.fsdp import fully_shard

    from qed_lightning.engines.full_weights import iter_full_weights

    model = _model()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    local = dict(model.named_parameters())
    assert local["model.layers.0.mlp.up_proj.weight"].to_local().numel() < reference["model.layers.0.mlp.up_proj.weight"].numel()
    got = {name: tensor.clone() for name, tensor in iter_full_weights(model)}
    assert set(got) == set(reference), sorted(set(got) ^ set(reference))
    for name, tensor in reference.items():
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("use_orig_params", [True, False])
def test_fsdp1_full_weights_equal_unsharded(use_orig_params):
    run_on_ranks(_check_fsdp1, 2, use_orig_params)


def test_fsdp2_full_weights_equal_unsharded():
    run_on_ranks(_check_fsdp2, 2)


def test_plain_module_full_weights_include_tied_head():
    from qed_lightning.engines.full_weights import iter_full_weights

    model = _model()
    got = dict(iter_full_weights(model))
    assert set(got) == set(model.state_dict())
    assert got["lm_head.weight"].data_ptr() == got["model.embed_tokens.weight"].data_ptr()
