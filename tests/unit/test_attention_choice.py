"""The trainer's attention kernel: packed rows stay fast on CUDA only with flash
attention (varlen boundaries from the position ids); CPU keeps transformers' default."""
import logging

from qed_lightning.models.attention import choose_attention
from qed_lightning.models import load_policy


def test_cuda_prefers_flash_attention_and_warns_without_it(caplog):
    assert choose_attention(None, cuda=True, flash_available=True) == "flash_attention_2"
    with caplog.at_level(logging.WARNING, logger="qed_lightning.models.attention"):
        assert choose_attention(None, cuda=True, flash_available=False) == "sdpa"
    assert "dense [L, L] mask" in caplog.text


def test_cpu_keeps_the_default_and_an_explicit_choice_wins(caplog):
    with caplog.at_level(logging.WARNING, logger="qed_lightning.models.attention"):
        assert choose_attention(None, cuda=False, flash_available=False) is None
        assert choose_attention("eager", cuda=True, flash_available=True) == "eager"
    assert caplog.text == ""


def test_the_setting_reaches_the_loaded_model(tiny_model_dir):
    assert load_policy(str(tiny_model_dir), attn_implementation="eager").config._attn_implementation == "eager"
    assert load_policy(str(tiny_model_dir)).config._attn_implementation == "sdpa"  # CPU: transformers' default
