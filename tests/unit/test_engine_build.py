"""The RL run's engine by ``engine.backend``: a registry of builders."""
import pytest

from qed_lightning.engines.build import ENGINE_BACKENDS, EngineContext, build_engine
from qed_lightning.modules.rl_settings import EngineSettings


def test_an_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"engine.backend must be one of \['hf', 'served', 'vllm'\], got 'tgi'"):
        build_engine(EngineSettings(backend="tgi"), EngineContext("m", "float32", 0, "."))


def test_the_hf_backend_loads_the_policy_in_the_run_dtype_unless_the_engine_sets_one(tiny_model_dir):
    assert sorted(ENGINE_BACKENDS) == ["hf", "served", "vllm"]
    ctx = EngineContext(str(tiny_model_dir), "float32", 0, ".")
    assert str(next(build_engine(EngineSettings(backend="hf"), ctx).model.parameters()).dtype) == "torch.float32"
    engine = build_engine(EngineSettings(backend="hf", dtype="bfloat16"), ctx)
    assert str(next(engine.model.parameters()).dtype) == "torch.bfloat16"
