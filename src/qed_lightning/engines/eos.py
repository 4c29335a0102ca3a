"""The token ids that end a completion: every EOS id the model declares.

Qwen3 models declare two (``generation_config.json``: ``"eos_token_id": [151645,
151643]``, ``<|im_end|>`` and ``<|endoftext|>``) while their tokenizer names one.
The engines ignore the model's generation config for sampling
(``generation_config="vllm"``), and vLLM documents that setting as loading no
generation config at all (vllm 0.32 still takes the EOS ids from it, but nothing
promises that), so the ids are read here and passed to every request explicitly.
"""
from __future__ import annotations

from qed_lightning.models import merge_eos_ids

__all__ = ["declared_eos_ids"]


def declared_eos_ids(model: str, revision: str | None = None, tokenizer_eos: int | None = None) -> list[int]:
    """The ``eos_token_id`` of the model's generation config (an int or a list; the
    one in ``config.json`` when there is no ``generation_config.json``), then the
    tokenizer's EOS, without repeats.

    Args:
        model: Local directory or hub id.
        revision: Hub revision (ignored for a local directory).
        tokenizer_eos: The tokenizer's EOS id; None: read from the model's tokenizer.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    try:
        declared = GenerationConfig.from_pretrained(model, revision=revision).eos_token_id
    except OSError:  # no generation_config.json: transformers and vLLM fall back to config.json
        try:
            declared = getattr(AutoConfig.from_pretrained(model, revision=revision), "eos_token_id", None)
        except OSError:
            declared = None
    if tokenizer_eos is None:
        tokenizer_eos = AutoTokenizer.from_pretrained(model, revision=revision).eos_token_id
    return merge_eos_ids(declared, tokenizer_eos)
