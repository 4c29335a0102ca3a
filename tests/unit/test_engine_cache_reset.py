"""A weight push fails loudly when the engine keeps its prefix cache (KV computed with
the old weights). vLLM refuses a reset only while KV blocks are held, which a
synchronous caller cannot cause, so the refusal is injected with stand-ins."""
import pytest
import torch

WEIGHTS = {"w": torch.ones(2)}


class StubLLM:
    """The two calls ``VLLMEngine.load_weights`` makes on vLLM's ``LLM``."""

    def __init__(self, reset_ok: bool, dtype=torch.float32) -> None:
        from types import SimpleNamespace

        self.reset_ok, self.loaded, self.dtypes = reset_ok, [], {}
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(dtype=dtype))

    def collective_rpc(self, method, kwargs):
        for name, tensor in kwargs["weights_iterator"]:
            self.loaded.append(name)
            self.dtypes[name] = tensor.dtype

    def reset_prefix_cache(self) -> bool:
        return self.reset_ok


def stub_vllm_engine(reset_ok: bool, dtype=torch.float32):
    pytest.importorskip("vllm", reason="vllm is not installed (make install)")
    from qed_lightning.engines.vllm_engine import VLLMEngine

    engine = object.__new__(VLLMEngine)  # no engine start: only load_weights runs
    engine.llm, engine._expected, engine.weight_version, engine.last_sync = StubLLM(reset_ok, dtype), None, 0, {}
    return engine


def test_vllm_engine_refuses_a_push_whose_prefix_cache_was_not_reset():
    engine = stub_vllm_engine(reset_ok=False)
    with pytest.raises(RuntimeError, match="did not reset its prefix cache after pushing weight version 3.*old"):
        engine.load_weights(WEIGHTS, version=3)
    assert engine.llm.loaded == ["w"] and engine.weight_version == 0  # not claimed as served

    engine = stub_vllm_engine(reset_ok=True)
    engine.load_weights(WEIGHTS, version=3)
    assert engine.weight_version == 3


def served(tmp_path, reset_reply):
    from qed_lightning.engines.served_engine import ServedEngine

    engine = ServedEngine(["http://127.0.0.1:9"], weights_dir=str(tmp_path))
    held = {"version": -1}

    def rpc(base, method, timeout, **kwargs):
        if method == "qed_load_weights":
            held["version"] = int(kwargs["version"])
        return [held["version"]]

    engine._rpc = rpc
    engine._post = lambda url, body, timeout=None: reset_reply if url.endswith("/reset_prefix_cache") else None
    return engine


def test_served_engine_refuses_a_push_whose_prefix_cache_was_not_reset(tmp_path):
    from qed_lightning.engines.served_engine import ServedEngineError

    engine = served(tmp_path, {"success": False})
    with pytest.raises(ServedEngineError, match="127.0.0.1:9: did not reset its prefix cache after loading weight vers"):
        engine.load_weights(WEIGHTS, version=2)
    engine.close()
    for reply in ({"success": True}, None):  # None: an older server that answers without a body
        engine = served(tmp_path / str(reply), reply)
        engine.load_weights(WEIGHTS, version=2)
        assert engine.weight_version == 2
        engine.close()


def test_fp32_master_weights_reach_a_bf16_engine_as_bf16_and_integer_buffers_unchanged():
    engine = stub_vllm_engine(reset_ok=True, dtype=torch.bfloat16)
    engine.load_weights({"w": torch.full((2,), 1 + 2**-10), "steps": torch.arange(3)}, version=1)
    assert engine.llm.dtypes == {"w": torch.bfloat16, "steps": torch.int64}
