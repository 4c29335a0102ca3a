"""Every EOS id a model's generation config declares ends a completion (Qwen3 declares
two): the tiny model is given a second EOS id that it really emits, and the in-process
vLLM engine, the HF engine and the served engine's requests stop at it."""
import json
import shutil

import pytest
import torch

from qed_lightning.contracts import Problem, SamplingSettings, Verdict
from qed_lightning.engines.hf_engine import HFEngine
from qed_lightning.rollouts.batch import build_rollout_batch

pytestmark = pytest.mark.slow
PROMPT, OTHER = [100, 7, 300], [11, 12, 13, 14, 15]
GREEDY = SamplingSettings(temperature=0.0, max_tokens=32)


@pytest.fixture(scope="module")
def two_eos(tiny_model_dir, tmp_path_factory):
    """(model dir, tokenizer EOS, second EOS, PROMPT's and OTHER's greedy completions
    without it). The second id is the first token of PROMPT's greedy completion that is
    new there (not its first token, so the stop comes mid-completion) and that OTHER's
    completion never emits."""
    hf = HFEngine(str(tiny_model_dir))
    free = hf.generate([PROMPT, OTHER], GREEDY)
    ours, other = free[0][0].completion_ids, free[1][0].completion_ids
    assert free[0][0].finish_reason == free[1][0].finish_reason == "length"
    stop = next((t for k, t in enumerate(ours) if k > 0 and t not in ours[:k] and t not in other), None)
    assert stop is not None, f"no usable second EOS id in the greedy completion {ours}"
    model_dir = tmp_path_factory.mktemp("two_eos") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    eos_id = hf.tokenizer.eos_token_id
    config = json.loads((model_dir / "generation_config.json").read_text())
    config["eos_token_id"] = [eos_id, stop]
    (model_dir / "generation_config.json").write_text(json.dumps(config))
    return model_dir, eos_id, stop, ours, other


def check_stops(groups, two_eos):
    _, _, stop, ours, other = two_eos
    k = ours.index(stop)
    ended, free = groups[0][0], groups[1][0]
    assert ended.completion_ids == ours[:k + 1] and ended.completion_ids[-1] == stop
    assert ended.finish_reason == "stop" and not ended.truncated and len(ended.logprobs) == k + 1
    assert free.completion_ids == other and free.truncated


def test_vllm_engine_stops_at_every_declared_eos_id(two_eos, monkeypatch):
    pytest.importorskip("vllm", reason="vllm is not installed (make install)")
    from vllm.config import ModelConfig

    from qed_lightning.engines.vllm_engine import VLLMEngine

    model_dir, eos_id, stop, ours, _ = two_eos
    # vllm 0.32 itself takes the EOS ids from generation_config.json although
    # generation_config="vllm" is documented to load none; turned off here (as that
    # documentation says), so only the engine's own stop ids can end the completion
    monkeypatch.setattr(ModelConfig, "try_get_generation_config", lambda self: {})
    engine = VLLMEngine(str(model_dir), dtype="float32", max_model_len=128, kv_cache_memory_bytes=16 << 20)
    monkeypatch.undo()
    assert engine.eos_ids == [eos_id, stop]
    groups = engine.generate([PROMPT, OTHER], GREEDY)
    check_stops(groups, two_eos)
    # one request per seeded sample: the same stop ids there
    check_stops(engine.generate([PROMPT, OTHER], GREEDY, sample_seeds=[[3], [4]]), two_eos)

    # the batch trains the second EOS like the first: a completion token, not truncated
    flat = [g[0] for g in groups]
    batch = build_rollout_batch([Problem("a", "x"), Problem("b", "y")], groups, [Verdict(7), Verdict(0)],
                                torch.tensor([1.0, 0.0]), torch.tensor([True, True]), pad_id=0)
    end = len(PROMPT) + ours.index(stop)  # position of the stop token in row 0
    assert batch.truncated.tolist() == [False, True]
    assert batch.input_ids[0, end] == stop and batch.completion_mask[0, end]
    assert not batch.attention_mask[0, end + 1:].any()
    assert batch.sampling_logprobs[0, end] == pytest.approx(flat[0].logprobs[-1])


def test_hf_engine_stops_at_every_declared_eos_id(two_eos):
    model_dir, eos_id, stop, _, _ = two_eos
    engine = HFEngine(str(model_dir))
    assert engine.eos_ids == [eos_id, stop]
    check_stops(engine.generate([PROMPT, OTHER], GREEDY), two_eos)


def test_served_engine_sends_every_declared_eos_id(two_eos, tmp_path):
    from qed_lightning.engines.served_engine import ServedEngine

    model_dir, eos_id, stop, _, _ = two_eos
    engine = ServedEngine(["http://127.0.0.1:9"], weights_dir=str(tmp_path), model_dir=str(model_dir))
    bodies = []
    engine._post = lambda url, body, timeout=None: bodies.append(body) or {"choices": []}
    try:
        engine._complete(PROMPT, GREEDY, None, 1, None, engine.base_urls[0])
    finally:
        engine.close()
    assert bodies[0]["stop_token_ids"] == [eos_id, stop]
