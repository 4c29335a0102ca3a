"""Layer-by-layer full weights from FSDP shards (2 gloo ranks on CPU): every tensor
equals the unsharded model's, tied names included, and while one FSDP1 unit is
gathered the other units stay sharded (no second full copy of the model). Each
distinct parameter (FSDP2) or unit (FSDP1) is gathered exactly once: the tied LM
head is yielded from the embedding's gather, not gathered again, and the gathers
run without autograd while the consumer keeps its own grad mode."""
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

    # count gathers: every FSDP unit (the root included) must be summoned exactly once
    summons: list[int] = []
    original = FSDP.summon_full_params

    def counting(module, *args, **kwargs):
        summons.append(id(module))
        return original(module, *args, **kwargs)

    FSDP.summon_full_params = staticmethod(counting)
    got, ptrs = {}, {}
    try:
        for name, tensor in iter_full_weights(wrapped):
            assert torch.is_grad_enabled()  # the generator's no_grad does not leak into the consumer
            assert not tensor.requires_grad
            got[name], ptrs[name] = tensor.clone(), tensor.data_ptr()
            open_units = [i for i, unit in enumerate(units) if gathered(unit)]
            if name.startswith("model.layers."):
                assert open_units == [int(name.split(".")[2])], (name, open_units)
            else:
                assert open_units == [], (name, open_units)
    finally:
        FSDP.summon_full_params = staticmethod(original)
    all_units = [m for m in wrapped.modules() if isinstance(m, FSDP)]
    assert sorted(summons) == sorted(id(u) for u in all_units), (len(summons), len(all_units))
    # the tied head comes from the same summon as the embedding: one gathered tensor
    assert ptrs["lm_head.weight"] == ptrs["model.embed_tokens.weight"]
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
    from torch.distributed.tensor import DTensor

    local = dict(model.named_parameters())
    assert local["model.layers.0.mlp.up_proj.weight"].to_local().numel() < reference["model.layers.0.mlp.up_proj.weight"].numel()
    # the tie survives sharding: one DTensor object under both names
    tied = dict(model.named_parameters(remove_duplicate=False))
    assert tied["lm_head.weight"] is tied["model.embed_tokens.weight"]

    # count gathers per parameter object, and the grad mode each runs under
    gathers: list[tuple[int, bool]] = []
    original = DTensor.full_tensor

    def counting(self, *args, **kwargs):
        gathers.append((id(self), torch.is_grad_enabled()))
        return original(self, *args, **kwargs)

    DTensor.full_tensor = counting
    got, ptrs, order = {}, {}, []
    try:
        for name, tensor in iter_full_weights(model):
            assert torch.is_grad_enabled()  # the generator's no_grad does not leak into the consumer
            assert not tensor.requires_grad and tensor.grad_fn is None
            got[name], ptrs[name] = tensor.clone(), tensor.data_ptr()
            order.append(name)
    finally:
        DTensor.full_tensor = original
    distinct = {id(p) for p in model.parameters()}  # parameters() drops the tied duplicate
    assert len(distinct) == len(tied) - 1
    assert sorted(i for i, _ in gathers) == sorted(distinct)  # each distinct parameter gathered exactly once
    assert not any(grad for _, grad in gathers)  # every gather ran under no_grad
    # consumers still get every name (HF's strict load needs the head's), from the one
    # gathered tensor, and right after the embedding: no gathered copy is held across layers
    assert set(got) == set(reference), sorted(set(got) ^ set(reference))
    assert ptrs["lm_head.weight"] == ptrs["model.embed_tokens.weight"]
    assert order.index("lm_head.weight") == order.index("model.embed_tokens.weight") + 1
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
    got = {}
    for name, tensor in iter_full_weights(model):
        assert torch.is_grad_enabled()  # the caller's grad mode between items
        got[name] = tensor
    assert set(got) == set(model.state_dict())
    assert got["lm_head.weight"].data_ptr() == got["model.embed_tokens.weight"].data_ptr()
    assert not any(t.requires_grad for t in got.values())


def test_full_weights_feed_hf_engine_strict_load():
    """The tied case still gives the HF engine every name its strict load checks."""
    from qed_lightning.engines.full_weights import iter_full_weights
    from qed_lightning.engines.weights import check_complete

    model = _model()
    check_complete((name for name, _ in iter_full_weights(model)), set(model.state_dict()))
    target = _model()
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    target.load_state_dict(dict(iter_full_weights(model)), strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
