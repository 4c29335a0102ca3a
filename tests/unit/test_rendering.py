"""Chat-template rendering of SFT examples: exact label positions for both templates."""
from __future__ import annotations

import pytest

from qed_lightning.data.rendering import (
    IGNORE_INDEX,
    SFTExample,
    render_sft_example,
    template_keeps_reasoning,
)
from qed_lightning.models.tiny import build_tiny_tokenizer

REASONING = "Check small cases: 1, 3, 5.\nThe pattern is clear."
RESPONSE = "Proof. By induction on n, the sum is n^2."
EXAMPLE = SFTExample(
    id="ex-1",
    prompt_messages=[{"role": "user", "content": "Prove that 1 + 3 + ... + (2n - 1) = n^2."}],
    reasoning=REASONING,
    response=RESPONSE,
)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _check_labels(tok, out, *, prompt_text, completion_text):
    """Labels are -100 exactly on the prompt tokens and equal input ids after them."""
    prompt_ids = _ids(tok, prompt_text)
    n = len(prompt_ids)
    assert out.input_ids[:n] == prompt_ids
    assert out.labels[:n] == [IGNORE_INDEX] * n
    assert out.labels[n:] == out.input_ids[n:]
    assert IGNORE_INDEX not in out.labels[n:]
    assert tok.decode(out.input_ids[n:]) == completion_text
    assert out.input_ids[-1] == tok.eos_token_id


def test_qwen3_template_labels(tiny_qwen3_tokenizer):
    tok = tiny_qwen3_tokenizer
    out = render_sft_example(tok, EXAMPLE)
    prompt = (
        "<|im_start|>user\nProve that 1 + 3 + ... + (2n - 1) = n^2.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )
    # <think> is part of the generation prompt; the ChatML "\n" after <|im_end|> is dropped.
    _check_labels(tok, out, prompt_text=prompt, completion_text=f"{REASONING}\n</think>\n\n{RESPONSE}<|im_end|>")
    assert out.id == "ex-1"


def test_smollm2_template_labels(tiny_smollm2_tokenizer):
    tok = tiny_smollm2_tokenizer
    out = render_sft_example(tok, EXAMPLE)
    prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"
        "<|im_start|>user\nProve that 1 + 3 + ... + (2n - 1) = n^2.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    completion = f"<think>\n{REASONING}\n</think>\n\n{RESPONSE}<|im_end|>"
    _check_labels(tok, out, prompt_text=prompt, completion_text=completion)


@pytest.mark.parametrize("fixture", ["tiny_qwen3_tokenizer", "tiny_smollm2_tokenizer"])
def test_reasoning_tokens_are_trained(fixture, request):
    tok = request.getfixturevalue(fixture)
    out = render_sft_example(tok, EXAMPLE)
    trained = [t for t in out.labels if t != IGNORE_INDEX]
    assert REASONING in tok.decode(trained)
    assert "Prove that" not in tok.decode(trained)


def test_no_reasoning_on_plain_template(tiny_smollm2_tokenizer):
    tok = tiny_smollm2_tokenizer
    ex = SFTExample(id="plain", prompt_messages=EXAMPLE.prompt_messages, reasoning=None, response=RESPONSE)
    out = render_sft_example(tok, ex)
    assert tok.decode([t for t in out.labels if t != IGNORE_INDEX]) == f"{RESPONSE}<|im_end|>"


def test_template_keeps_reasoning(tiny_qwen3_tokenizer, tiny_smollm2_tokenizer):
    assert template_keeps_reasoning(tiny_qwen3_tokenizer) is True
    assert template_keeps_reasoning(tiny_smollm2_tokenizer) is False


def test_history_rewriting_template_is_an_error_naming_the_example():
    tok = build_tiny_tokenizer(template="smollm2")
    # Marks a user turn once it has been answered: the prompt render then differs
    # from the same turn inside the full conversation.
    tok.chat_template = (
        "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
        "{%- if m.role == 'user' and not loop.last %}(answered) {% endif %}"
        "{{ m.content }}<|im_end|>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    )
    ex = SFTExample(id="rewrites-42", prompt_messages=EXAMPLE.prompt_messages, reasoning="r", response="a")
    with pytest.raises(ValueError, match="rewrites-42.*not a prefix"):
        render_sft_example(tok, ex)


def test_eos_inside_response_is_an_error(tiny_smollm2_tokenizer):
    ex = SFTExample(id="eos-in-text", prompt_messages=EXAMPLE.prompt_messages, reasoning=None, response="a<|im_end|>b")
    with pytest.raises(ValueError, match="eos-in-text"):
        render_sft_example(tiny_smollm2_tokenizer, ex)


@pytest.mark.parametrize("reasoning", [None, ""])
def test_thinking_template_without_reasoning_trains_an_empty_think_block(tiny_qwen3_tokenizer, reasoning):
    # The generation prompt opens <think>: the completion must close it. The tiny
    # tokenizer, like Qwen3's, writes the block's blank line as one token, so the
    # completion is tokenized from the prompt's last token on: "\n" then "</think>".
    tok = tiny_qwen3_tokenizer
    ex = SFTExample(id="no-trace", prompt_messages=EXAMPLE.prompt_messages, reasoning=reasoning, response=RESPONSE)
    out = render_sft_example(tok, ex)
    prompt_ids = _ids(tok, "<|im_start|>user\nProve that 1 + 3 + ... + (2n - 1) = n^2.<|im_end|>\n"
                           "<|im_start|>assistant\n<think>\n")
    n = len(prompt_ids)
    newline, blank_line, close = (_ids(tok, t) for t in ("\n", "\n\n", "</think>"))
    assert len(blank_line) == 1  # the merge that makes the whole render differ at the boundary
    assert _ids(tok, tok.apply_chat_template(
        [*ex.prompt_messages, {"role": "assistant", "content": RESPONSE}], tokenize=False))[n - 1] == blank_line[0]
    assert out.input_ids[:n] == prompt_ids and out.labels[:n] == [IGNORE_INDEX] * n
    assert out.input_ids[n:n + 3] == newline + close + blank_line
    assert tok.decode(out.input_ids[n:]) == f"\n</think>\n\n{RESPONSE}<|im_end|>"
    assert out.labels[n:] == out.input_ids[n:]


def test_a_template_that_opens_think_but_skips_an_absent_block_still_gets_one():
    # Some thinking templates write the think block only from reasoning_content: for an
    # example without reasoning the block is then passed empty, so the completion closes
    # the <think> the generation prompt opened.
    tok = build_tiny_tokenizer(template="qwen3")
    tok.chat_template = (
        "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.reasoning_content is string %}<think>\n{{ m.reasoning_content }}\n</think>\n\n{% endif %}"
        "{{ m.content }}<|im_end|>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    out = render_sft_example(tok, SFTExample(id="x", prompt_messages=EXAMPLE.prompt_messages, reasoning=None,
                                             response=RESPONSE))
    assert tok.decode([t for t in out.labels if t != IGNORE_INDEX]) == f"\n</think>\n\n{RESPONSE}<|im_end|>"
