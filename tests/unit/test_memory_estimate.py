import pytest

from qed_lightning.engines.memory import GIB, QWEN3_4B, ModelShape, estimate_memory

SMALL = ModelShape(params=1000, layers=2, hidden=4, intermediate=8, kv_heads=1, head_dim=2, vocab=10)


def test_components_match_hand_counts():
    e = estimate_memory(SMALL, train_tokens=3, kv_tokens=5, optimizer="adamw", master_weights=True)
    assert e.weights * GIB == 2000 and e.gradients * GIB == 2000 and e.engine_weights * GIB == 2000
    assert e.optimizer * GIB == 8000 and e.master_weights * GIB == 4000
    assert e.activations * GIB == 3 * (2 * 4 + 6 * 4 + 3 * 8) * 2  # kept inputs + one layer's working set
    assert e.loss_buffer * GIB == 2 * 3 * 10 * 4
    assert e.kv_cache * GIB == 5 * (2 * 2 * 1 * 2 * 2)
    assert e.total * GIB == pytest.approx(2000 * 3 + 8000 + 4000 + 336 + 240 + 80)


def test_eight_bit_and_offload_shrink_only_the_optimizer():
    full = estimate_memory(SMALL, 3, 5)
    assert estimate_memory(SMALL, 3, 5, optimizer="adamw_8bit").optimizer == full.optimizer / 4
    assert estimate_memory(SMALL, 3, 5, optimizer="offload").optimizer == 0
    with pytest.raises(ValueError, match="optimizer must be one of"):
        estimate_memory(SMALL, 3, 5, optimizer="sgd")


def test_paper_scale_group_does_not_fit_one_80gb_card():
    # 16 samples x 49,152 tokens in flight: the KV cache alone exceeds 80 GiB
    e = estimate_memory(QWEN3_4B, train_tokens=49_664, kv_tokens=16 * 49_152)
    assert e.kv_cache > 100 and e.total > 160
    assert estimate_memory(QWEN3_4B, 8192, 8 * 8192, optimizer="adamw_8bit").total < 60


def test_sleep_mode_peak_is_the_larger_phase():
    e = estimate_memory(SMALL, 3, 5)
    assert e.training_phase * GIB == 2000 + 2000 + 8000 + 336 + 240
    assert e.generation_phase * GIB == 2000 + 8000 + 2000 + 80
    assert e.peak_with_sleep == max(e.training_phase, e.generation_phase) < e.total
