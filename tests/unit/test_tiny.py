"""The tiny tokenizer/model factory: round trips, special ids, determinism, save/load."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

from qed_lightning.models import tiny


def test_tokenizer_round_trips_text_with_think(tiny_qwen3_tokenizer):
    tok = tiny_qwen3_tokenizer
    text = "<think>\nLet n be odd; then n^2 = 1 (mod 8).\n</think>\n\nProof. Done, 42 ≥ 7 ∎"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_special_and_think_tokens_are_single_ids(tiny_qwen3_tokenizer):
    tok = tiny_qwen3_tokenizer
    for t in tiny.SPECIAL_TOKENS + tiny.THINK_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None
    assert tok("x")["input_ids"] == tok("x", add_special_tokens=False)["input_ids"]


def test_chat_templates(tiny_qwen3_tokenizer, tiny_smollm2_tokenizer):
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}]
    q = tiny_qwen3_tokenizer.apply_chat_template
    s = tiny_smollm2_tokenizer.apply_chat_template
    assert q(msgs, tokenize=False) == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\nA<|im_end|>\n"
    )
    assert q(msgs[:1], tokenize=False, add_generation_prompt=True).endswith("<|im_start|>assistant\n<think>\n")
    assert s(msgs, tokenize=False).endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n")
    assert s(msgs[:1], tokenize=False, add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_model_forward_shape_and_vocab(tiny_qwen3_tokenizer):
    model = tiny.build_tiny_model(tiny_qwen3_tokenizer)
    assert isinstance(model, Qwen3ForCausalLM)
    cfg = model.config
    assert cfg.vocab_size % 64 == 0 and cfg.vocab_size >= len(tiny_qwen3_tokenizer)
    assert cfg.head_dim >= 32 and cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert next(model.parameters()).dtype == torch.float32
    ids = torch.tensor([[1, 5, 9, 2], [3, 4, 6, 7]])  # [B, T]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 4, cfg.vocab_size)


def test_builds_are_deterministic(tiny_qwen3_tokenizer):
    other = tiny.build_tiny_tokenizer(template="qwen3")
    assert other.get_vocab() == tiny_qwen3_tokenizer.get_vocab()
    assert other.backend_tokenizer.to_str() == tiny_qwen3_tokenizer.backend_tokenizer.to_str()
    a = tiny.build_tiny_model(tiny_qwen3_tokenizer, seed=0).state_dict()
    b = tiny.build_tiny_model(other, seed=0).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = tiny.build_tiny_model(tiny_qwen3_tokenizer, seed=1).state_dict()
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_building_leaves_global_rng_alone(tiny_qwen3_tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.build_tiny_model(tiny_qwen3_tokenizer)
    assert torch.equal(torch.rand(3), expected)


def test_saved_dir_reloads_with_identical_logits(tiny_model_dir, tiny_model, tiny_qwen3_tokenizer):
    assert tiny_model_dir.name.startswith("tiny-qwen3-qwen3-")
    assert tiny.tiny_model_dir(tiny_model_dir.parent.parent) == tiny_model_dir  # reused
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "<|im_start|>user\nProve it.<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert tok(text)["input_ids"] == tiny_qwen3_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tok.chat_template == tiny_qwen3_tokenizer.chat_template
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tiny_model.generation_config.eos_token_id == tok.eos_token_id
    assert tiny_model.generation_config.pad_token_id == tok.pad_token_id

    fresh = tiny.build_tiny_model(tiny_qwen3_tokenizer).eval()
    again = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([tok(text)["input_ids"]])  # [1, T]
    with torch.no_grad():
        ref = fresh(input_ids=ids).logits
        assert torch.equal(tiny_model(input_ids=ids).logits, ref)
        assert torch.equal(again(input_ids=ids).logits, ref)


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("QED_CACHE_DIR", str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path
    path = tiny.tiny_model_dir(template="smollm2")
    assert path.parent == tmp_path / "models" and path.name.startswith("tiny-qwen3-smollm2-")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]  # no temp dir left
