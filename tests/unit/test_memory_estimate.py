import pytest

from qed_lightning.engines.memory import GIB, QWEN3_4B, ModelShape, estimate_memory

SMALL = ModelShape(params=1000, layers=2, hidden=4, intermediate=8, kv_heads=1, head_dim=2, vocab=10)
WORKING_SET = 6 * 4 + 3 * 8  # one layer's recomputed activations per token (elements)


def test_bf16_mixed_is_fp32_master_weights_gradients_and_moments_with_a_bf16_engine():
    e = estimate_memory(SMALL, train_tokens=3, kv_tokens=5)  # the default: bf16-mixed, AdamW
    assert e.weights * GIB == 4000 and e.gradients * GIB == 4000 and e.optimizer * GIB == 8000
    assert e.master_weights == 0 and e.gathered == 0
    assert e.engine_weights * GIB == 2000
    # the kept layer inputs are the fp32 residual stream, the working set bf16
    assert e.activations * GIB == 3 * (2 * 4 * 4 + WORKING_SET * 2)
    assert e.loss_buffer * GIB == 2 * 3 * 10 * 4 + 10 * 4 * 2  # fp32 logits + softmax, the head's bf16 copy
    assert e.kv_cache * GIB == 5 * (2 * 2 * 1 * 2 * 2)
    assert e.total * GIB == pytest.approx(4000 + 4000 + 8000 + 2000 + 384 + 320 + 80)
    assert e.training_phase * GIB == pytest.approx(4000 + 4000 + 8000 + 384 + 320)
    assert e.generation_phase * GIB == pytest.approx(4000 + 8000 + 2000 + 80)
    with pytest.raises(ValueError, match="fp32 weights: they are the master copy"):
        estimate_memory(SMALL, 3, 5, master_weights=True)


def test_bf16_true_with_a_master_copy_and_32_true():
    e = estimate_memory(SMALL, 3, 5, precision="bf16-true", master_weights=True)
    assert e.weights * GIB == 2000 and e.gradients * GIB == 2000 and e.engine_weights * GIB == 2000
    assert e.optimizer * GIB == 8000 and e.master_weights * GIB == 4000
    assert e.activations * GIB == 3 * (2 * 4 * 2 + WORKING_SET * 2)  # kept inputs + one layer's working set
    assert e.loss_buffer * GIB == 2 * 3 * 10 * 4  # bf16 weights: no copy of the head
    assert e.total * GIB == pytest.approx(2000 * 3 + 8000 + 4000 + 336 + 240 + 80)
    f = estimate_memory(SMALL, 3, 5, precision="32-true", engine_bytes=4)
    assert f.weights * GIB == 4000 and f.engine_weights * GIB == 4000
    assert f.activations * GIB == 3 * (2 * 4 * 4 + WORKING_SET * 4)
    with pytest.raises(ValueError, match="precision must be one of"):
        estimate_memory(SMALL, 3, 5, precision="16-mixed")


def test_without_checkpointing_autocast_keeps_a_bf16_copy_of_the_weights():
    mixed = estimate_memory(SMALL, 3, 5, gradient_checkpointing=False)
    assert mixed.activations * GIB == 3 * 2 * (8 * 4 + 4 * 8) * 2 + 1000 * 2
    true = estimate_memory(SMALL, 3, 5, precision="bf16-true", gradient_checkpointing=False)
    assert true.activations * GIB == 3 * 2 * (8 * 4 + 4 * 8) * 2


def test_sharding_divides_the_states_and_gathers_one_unit_in_bf16():
    e = estimate_memory(SMALL, 3, 5, shards=4)
    assert e.weights * GIB == 1000 and e.gradients * GIB == 1000 and e.optimizer * GIB == 2000
    assert e.gathered * GIB == (10 * 4 + (1000 - 10 * 4) / 2) * 2  # embeddings (the tied head) + one layer, bf16
    assert e.activations * GIB == 3 * (2 * 4 * 2 + WORKING_SET * 2)  # bf16 gathers: a bf16 residual stream
    assert e.loss_buffer * GIB == 2 * 3 * 10 * 4  # the head is gathered in bf16 (counted in gathered)
    assert e.engine_weights * GIB == 2000  # every rank's engine holds the whole model
    with pytest.raises(ValueError, match="shards must be >= 1"):
        estimate_memory(SMALL, 3, 5, shards=0)


def test_eight_bit_and_offload_shrink_only_the_optimizer():
    full = estimate_memory(SMALL, 3, 5)
    assert estimate_memory(SMALL, 3, 5, optimizer="adamw_8bit").optimizer == full.optimizer / 4
    assert estimate_memory(SMALL, 3, 5, optimizer="offload").optimizer == 0
    with pytest.raises(ValueError, match="optimizer must be one of"):
        estimate_memory(SMALL, 3, 5, optimizer="sgd")


def test_paper_scale_group_does_not_fit_one_80gb_card():
    # 16 samples x 49,152 tokens in flight: the KV cache alone exceeds 80 GiB
    e = estimate_memory(QWEN3_4B, train_tokens=49_664, kv_tokens=16 * 49_152)
    assert e.kv_cache > 100 and e.total > 190
    # fp32 master, gradients and moments: 16 bytes per parameter before any activation
    assert e.weights + e.gradients + e.optimizer == pytest.approx(16 * 4.02e9 / GIB)
    assert estimate_memory(QWEN3_4B, 8192, 8 * 8192, optimizer="adamw_8bit").total < 60


def test_sleep_mode_peak_is_the_larger_phase():
    e = estimate_memory(SMALL, 3, 5, precision="bf16-true")
    assert e.training_phase * GIB == 2000 + 2000 + 8000 + 336 + 240
    assert e.generation_phase * GIB == 2000 + 8000 + 2000 + 80
    assert e.peak_with_sleep == max(e.training_phase, e.generation_phase) < e.total
