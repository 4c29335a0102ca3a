"""Shared fixtures: the tiny tokenizer/model factory, built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from qed_lightning import tiny


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
