"""ServedEngine against a real `vllm serve` of the tiny model on 127.0.0.1: the same
samples as the in-process engine, weights pushed through a shared directory are
exact, and every completion carries the version its server really held."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

from qed_lightning.contracts import SamplingSettings
from qed_lightning.engines.weights import IncompleteWeightsError

pytestmark = pytest.mark.slow
PROMPTS = [[11, 12, 13, 14, 15], [40, 41], [100, 7, 300]]


@pytest.fixture()
def server(served_policy):
    return served_policy


@pytest.fixture()
def engine(server, tiny_model_dir, tmp_path):
    from qed_lightning.engines.served_engine import ServedEngine

    eng = ServedEngine([f"http://127.0.0.1:{server.port}"], weights_dir=str(tmp_path / "weights"),
                       model_dir=str(tiny_model_dir), max_model_len=512, max_attempts=2)
    yield eng
    eng.close()


def _perturbed(model):
    trainer = copy.deepcopy(model)
    opt = torch.optim.SGD(trainer.parameters(), lr=5.0)
    batch = torch.tensor([PROMPTS[0] + [200, 201, 202]])
    trainer(batch, labels=batch).loss.backward()
    opt.step()
    return trainer


def test_served_samples_equal_the_in_process_engines(engine, vllm_engine, tiny_model):
    engine.load_weights(tiny_model.state_dict(), version=0)
    sampling = SamplingSettings(temperature=0.8, max_tokens=12, n=3)
    seeds = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    served = engine.generate(PROMPTS, sampling, sample_seeds=seeds)
    local = vllm_engine.generate(PROMPTS, sampling, sample_seeds=seeds)
    for g_served, g_local in zip(served, local):
        for a, b in zip(g_served, g_local):
            assert a.completion_ids == b.completion_ids and a.prompt_ids == b.prompt_ids
            assert a.finish_reason == b.finish_reason and a.weight_version == 0
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-4)


def test_weights_pushed_through_the_directory_are_exact_and_stamped(engine, vllm_engine, tiny_model):
    trainer = _perturbed(tiny_model)
    greedy = SamplingSettings(temperature=0.0, max_tokens=12)
    with pytest.raises(IncompleteWeightsError, match="missing 1 of the engine's"):
        engine.load_weights({k: v for k, v in trainer.state_dict().items() if "embed_tokens" not in k}, 9)
    try:
        engine.load_weights(trainer.state_dict(), version=1)
        assert engine.server_versions() == [1] and engine.last_sync["sync/reload_s"] > 0
        vllm_engine.load_weights(trainer.state_dict(), version=1)
        served, local = engine.generate(PROMPTS, greedy), vllm_engine.generate(PROMPTS, greedy)
        assert [g[0].completion_ids for g in served] == [g[0].completion_ids for g in local]
        assert all(g[0].weight_version == 1 for g in served)
        engine.load_weights(tiny_model.state_dict(), version=2)
        assert sorted(p.name for p in (engine.weights_dir_path).iterdir()) == ["v000001", "v000002"]
        engine.load_weights(tiny_model.state_dict(), version=3)
        assert sorted(p.name for p in engine.weights_dir_path.iterdir()) == ["v000002", "v000003"]  # keep 2
    finally:
        vllm_engine.load_weights(tiny_model.state_dict(), version=0)


def test_a_server_holding_other_weights_is_stamped_with_them(engine, tiny_model, server):
    """Someone else reloads the server (or it restarts on old weights): completions
    carry the version it really holds, and the producer's on-policy check refuses them."""
    from qed_lightning.engines.served_engine import ServedEngine

    engine.load_weights(tiny_model.state_dict(), version=4)
    engine.load_weights(tiny_model.state_dict(), version=5)
    intruder = ServedEngine([f"http://127.0.0.1:{server.port}"], weights_dir=engine.weights_dir)
    intruder._rpc(intruder.base_urls[0], "qed_load_weights", 60.0,
                  weights_path=str(engine.weights_dir_path / "v000004"), version="4")
    groups = engine.generate(PROMPTS[:1], SamplingSettings(max_tokens=4, n=2), sample_seeds=[[1, 2]])
    assert [c.weight_version for c in groups[0]] == [4, 4]
    intruder.close()


def test_an_unreachable_server_is_retried_counted_and_reported(tmp_path, caplog):
    from qed_lightning.engines.served_engine import ServedEngine, ServedEngineError
    from qed_lightning.engines.vllm_serve import free_port

    dead = ServedEngine([f"http://127.0.0.1:{free_port()}"], weights_dir=str(tmp_path), max_attempts=3)
    with caplog.at_level(logging.WARNING, logger="qed_lightning.engines.served_engine"):
        with pytest.raises(ServedEngineError, match="failed after 3 attempts: ConnectError"):
            dead.generate([[1, 2]], SamplingSettings(max_tokens=4))
    assert dead.retries == 2
    assert "ConnectError" in caplog.text and "retrying (attempt 3 of 3)" in caplog.text
    dead.close()
