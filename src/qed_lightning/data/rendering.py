"""Rendering SFT examples through a tokenizer's own chat template into token ids and
labels.

The prompt (with its generation prompt) and the full conversation are rendered as
text; the first must be a text prefix of the second (a template that rewrites earlier
turns is refused). The prompt's text and the rest are then tokenized *separately*:
the completion's tokens start exactly where the prompt's tokens end, which is what a
policy samples after that prompt and what RL later trains on too. Tokenizing the whole
conversation at once can merge characters across that boundary: Qwen3's tokenizer
writes an empty think block's ``<think>\\n\\n</think>`` with one ``\\n\\n`` token (271),
while the prompt ends ``<think>\\n`` (198); split, the completion starts ``\\n</think>``
(198, 151668), as sampled.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "RenderError",
    "SFTExample",
    "TokenizedExample",
    "template_keeps_reasoning",
    "template_opens_think",
    "render_sft_example",
]

# The value torch's cross-entropy (and transformers' loss) skips.
IGNORE_INDEX = -100

_PROBE_SENTINEL = "qed-reasoning-probe-7f3a"


@dataclass(frozen=True)
class SFTExample:
    """One supervised example before tokenization.

    Args:
        id: Stable identifier, used in every error message about this example.
        prompt_messages: Chat messages before the assistant turn (system/user...).
        reasoning: The chain of thought; ``""`` for an empty think block; None when
            the data has no reasoning column (an empty think block all the same when
            the template's generation prompt opens one).
        response: The final answer/proof written after the reasoning.
        origin: The source row (``file.jsonl:12``), for bad-row messages.
    """

    id: str
    prompt_messages: list[dict[str, str]]
    reasoning: str | None
    response: str
    origin: str | None = None


class RenderError(ValueError):
    """An example the chat template and tokenizer cannot turn into prompt + completion."""


@dataclass(frozen=True)
class TokenizedExample:
    """One tokenized example.

    Args:
        id: The source example's id.
        input_ids: Prompt then completion token ids.
        labels: Same length as ``input_ids``; ``IGNORE_INDEX`` where not trained,
            otherwise equal to ``input_ids`` (the loss does the one-token shift).
    """

    id: str
    input_ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(
                f"example {self.id!r}: {len(self.input_ids)} input ids but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def template_keeps_reasoning(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Tells whether the chat template renders an assistant's ``reasoning_content``.

    Args:
        tokenizer: A tokenizer with a chat template.

    Returns:
        True when a sentinel passed as ``reasoning_content`` shows up in the render
        (Qwen3-Thinking style), False when the template drops it (plain ChatML).
    """
    probe = [
        {"role": "user", "content": "probe"},
        {"role": "assistant", "content": "answer", "reasoning_content": _PROBE_SENTINEL},
    ]
    return _PROBE_SENTINEL in _render(tokenizer, probe, generation_prompt=False)


def template_opens_think(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Tells whether the generation prompt opens a think block (Qwen3-Thinking-2507):
    then every trained completion must close one, even without reasoning."""
    prompt = _render(tokenizer, [{"role": "user", "content": "probe"}], generation_prompt=True)
    return prompt.rstrip().endswith("<think>")


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The template already wrote its special tokens; letting the tokenizer add a
    # BOS (or anything else) here would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _assistant_message(example: SFTExample, keeps_reasoning: bool, opens_think: bool) -> dict[str, str]:
    reasoning = example.reasoning
    if reasoning is None and opens_think:
        reasoning = ""  # the prompt opened <think>: the completion closes it, empty
    if reasoning is None:
        return {"role": "assistant", "content": example.response}
    if keeps_reasoning:
        return {"role": "assistant", "content": example.response, "reasoning_content": reasoning}
    # The template would drop reasoning_content, so write the think block ourselves
    # in the same shape a thinking template produces.
    reasoning = reasoning.strip("\n")
    return {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{example.response}"}


def render_sft_example(tokenizer: PreTrainedTokenizerBase, example: SFTExample) -> TokenizedExample:
    """Tokenizes one example with its chat template; trains only the assistant turn.

    The trained part is everything the model would sample after the generation prompt:
    for a Qwen3-Thinking template (whose generation prompt already opens ``<think>``)
    that is ``{reasoning}\\n</think>\\n\\n{response}<|im_end|>``; for a plain ChatML
    template it is ``<think>\\n{reasoning}\\n</think>\\n\\n{response}<|im_end|>``.
    Empty reasoning (``""``) is an empty think block, tokenized from the prompt's
    last token on (module docstring).

    Choice about the tail: whatever the template writes after the end-of-turn token
    (ChatML's ``\\n``) is dropped from ``input_ids``. A sampled completion stops at
    eos, so SFT sequences then equal prompt + completion exactly as RL sees them, and
    no label ever teaches what follows eos.

    Args:
        tokenizer: Tokenizer with a chat template and ``eos_token`` = end of turn.
        example: The example to render.

    Returns:
        The token ids, with labels equal to them on the completion and
        ``IGNORE_INDEX`` on the prompt.

    Raises:
        RenderError: Naming ``example.id`` when the prompt's text is not a prefix of
            the full conversation's text (a template that rewrites earlier turns),
            when the completion has no end-of-turn token, or when something other than
            whitespace follows it.
    """
    keeps_reasoning = template_keeps_reasoning(tokenizer)
    opens_think = template_opens_think(tokenizer)
    prompt = [dict(m) for m in example.prompt_messages]
    full = prompt + [_assistant_message(example, keeps_reasoning, opens_think)]
    prompt_text = _render(tokenizer, prompt, generation_prompt=True)
    full_text = _render(tokenizer, full, generation_prompt=False)
    if not full_text.startswith(prompt_text):
        at = next((i for i, (a, b) in enumerate(zip(prompt_text, full_text)) if a != b), len(full_text))
        raise RenderError(
            f"example {example.id!r}: the prompt's text is not a prefix of the full conversation's "
            f"(first difference at character {at} of {len(prompt_text)}: prompt {prompt_text[at:at + 40]!r} vs "
            f"full {full_text[at:at + 40]!r}); the chat template renders earlier turns differently once "
            "an assistant turn follows"
        )
    prompt_ids = _tokenize(tokenizer, prompt_text)
    completion = _tokenize(tokenizer, full_text[len(prompt_text):])
    n_prompt = len(prompt_ids)

    eos = tokenizer.eos_token_id
    if eos not in completion:
        raise RenderError(f"example {example.id!r}: completion has no end-of-turn token {tokenizer.eos_token!r}")
    end = completion.index(eos) + 1
    if tokenizer.decode(completion[end:]).strip():
        raise RenderError(
            f"example {example.id!r}: text follows the first {tokenizer.eos_token!r} of the "
            "assistant turn (does the response contain an end-of-turn token?)"
        )
    completion = completion[:end]
    return TokenizedExample(
        id=example.id,
        input_ids=prompt_ids + completion,
        labels=[IGNORE_INDEX] * n_prompt + completion,
    )
