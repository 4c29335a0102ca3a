"""The in-process vLLM judge: a second engine beside the policy's, in one process."""
import pytest

from qed_lightning.contracts import GradingItem, Problem, SamplingSettings
from qed_lightning.judging import LLMJudge

pytestmark = pytest.mark.slow
PROBLEM = Problem("p", "Prove that 2 is even.", rubric="7: 2 = 2*1")


@pytest.fixture(scope="module")
def judge_client(tiny_model_dir, vllm_engine):  # the policy engine exists first, as in a run
    from qed_lightning.judging.engine_client import InProcessVLLMClient

    return InProcessVLLMClient(str(tiny_model_dir), dtype="float32", max_model_len=2048,
                               kv_cache_memory_bytes=64 << 20, max_tokens=900, seed=0)


def test_constrained_in_process_judge_grades_and_refuses_long_prompts(judge_client):
    # the rl_strict prompt takes ~1,650 of the tiny model's 2,048 positions: a short free-text preamble
    # leaves room for the verdict
    judge = LLMJudge(judge_client, constrained_verdict=True, answer_mode="whole", constrained_preamble_chars=100)
    verdicts = judge.grade([GradingItem(PROBLEM, f"Proof {i}: 2 = 2*1.") for i in range(4)]
                           + [GradingItem(PROBLEM, "word " * 2000)])
    assert all(v.ok and 0 <= v.score <= 7 for v in verdicts[:4]), [v.error for v in verdicts[:4]]
    assert verdicts[4].error_kind == "too_long" and verdicts[4].score is None
    assert all(v.raw.endswith("</score>") for v in verdicts[:4])


def test_constrained_grading_compiles_grammars_inline_and_repeats_itself(judge_client):
    # with vLLM's background compilation the engine step a constrained request joins
    # depends on thread timing, and with it the batches and the sampled verdicts: the
    # demo judge's scores changed from run to run (vllm_engine.compile_grammars_inline)
    manager = judge_client.engine.llm.llm_engine.engine_core.engine_core.structured_output_manager
    assert judge_client.engine.grammars_inline and manager._use_async_grammar_compilation is False
    judge = LLMJudge(judge_client, constrained_verdict=True, answer_mode="whole", constrained_preamble_chars=100)
    items = [GradingItem(PROBLEM, f"Proof {i}: 2 = 2*{i}.") for i in range(4)]
    assert [v.raw for v in judge.grade(items)] == [v.raw for v in judge.grade(items)]


def test_a_push_into_the_policy_engine_leaves_the_judge_engine_alone(judge_client, vllm_engine, tiny_model):
    greedy = SamplingSettings(temperature=0.0, max_tokens=8)
    before = judge_client.engine.generate([[5, 6, 7]], greedy)[0][0].completion_ids
    zeros = {k: v * 0.5 for k, v in tiny_model.state_dict().items()}
    try:
        vllm_engine.load_weights(zeros, version=3)
        assert judge_client.engine.generate([[5, 6, 7]], greedy)[0][0].completion_ids == before
        assert judge_client.engine.weight_version == 0
    finally:
        vllm_engine.load_weights(tiny_model.state_dict(), version=0)


def test_dropping_an_engine_leaves_the_others_working(tiny_model_dir, vllm_engine):
    import gc

    from qed_lightning.engines.vllm_engine import VLLMEngine

    extra = VLLMEngine(str(tiny_model_dir), dtype="float32", max_model_len=256, kv_cache_memory_bytes=32 << 20)
    greedy = SamplingSettings(temperature=0.0, max_tokens=4)
    expected = vllm_engine.generate([[5, 6, 7]], greedy)[0][0].completion_ids
    assert extra.generate([[5, 6, 7]], greedy)[0][0].completion_ids == expected
    del extra
    gc.collect()
    assert vllm_engine.generate([[5, 6, 7]], greedy)[0][0].completion_ids == expected
