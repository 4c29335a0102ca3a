"""Packing and collation: bin invariants, position resets, and no cross-sample leakage."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from qed_lightning.data.packing import collate_packed, collate_padded, pack_examples
from qed_lightning.data.rendering import IGNORE_INDEX, SFTExample, TokenizedExample, render_sft_example

PAD = 0


def _example(i: int, n: int, n_prompt: int = 2, seed: int = 0) -> TokenizedExample:
    rng = random.Random(seed * 1000 + i)
    ids = [rng.randrange(3, 700) for _ in range(n)]
    n_prompt = min(n_prompt, n)
    return TokenizedExample(id=f"ex{i}", input_ids=ids, labels=[IGNORE_INDEX] * n_prompt + ids[n_prompt:])


def test_pack_examples_fits_and_keeps_each_once():
    rng = random.Random(0)
    examples = [_example(i, rng.randint(1, 40)) for i in range(200)]
    bins = pack_examples(examples, max_tokens=64)
    assert all(sum(len(e) for e in b) <= 64 for b in bins)
    assert sorted(e.id for b in bins for e in b) == sorted(e.id for e in examples)
    assert len({id(e) for b in bins for e in b}) == len(examples)
    # First-fit decreasing is deterministic and close to the lower bound here.
    assert [[e.id for e in b] for b in pack_examples(examples, 64)] == [[e.id for e in b] for b in bins]
    assert len(bins) <= -(-sum(len(e) for e in examples) // 64) + 2


def test_pack_examples_order_is_first_fit_decreasing():
    examples = [_example(0, 3), _example(1, 6), _example(2, 4), _example(3, 4), _example(4, 2)]
    bins = pack_examples(examples, max_tokens=10)
    assert [[e.id for e in b] for b in bins] == [["ex1", "ex2"], ["ex3", "ex0", "ex4"]]


def test_pack_examples_rejects_overlong_by_id():
    with pytest.raises(ValueError, match="'ex7'.*11 tokens"):
        pack_examples([_example(0, 5), _example(7, 11)], max_tokens=10)


def test_collate_packed_layout():
    a, b, c = _example(0, 4), _example(1, 3), _example(2, 5)
    batch = collate_packed([[a, b], [c]], pad_id=PAD)
    assert batch.attention_mask is None
    assert batch.input_ids.shape == batch.labels.shape == batch.position_ids.shape == (2, 7)
    assert batch.input_ids.dtype == batch.labels.dtype == batch.position_ids.dtype == torch.long
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 4, 0, 1]]
    assert batch.input_ids.tolist() == [a.input_ids + b.input_ids, c.input_ids + [PAD, PAD]]
    # Each sample's first label is ignored (no cross-sample target); padding is ignored.
    assert batch.labels[1, 5:].tolist() == [IGNORE_INDEX] * 2
    assert batch.labels[0, 4] == IGNORE_INDEX and batch.labels[0, 0] == IGNORE_INDEX
    assert batch.labels[0].tolist() == a.labels + b.labels


def test_collate_packed_forces_first_label_ignored():
    ex = TokenizedExample(id="all-trained", input_ids=[5, 6, 7], labels=[5, 6, 7])
    batch = collate_packed([[ex, ex]], pad_id=PAD)
    assert batch.labels.tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 6, 7]]


def test_collate_padded_layout():
    a, b = _example(0, 4), _example(1, 2)
    batch = collate_padded([a, b], pad_id=PAD)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.attention_mask.dtype == torch.long
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert batch.input_ids[1].tolist() == b.input_ids + [PAD, PAD]
    assert batch.labels[1].tolist() == b.labels + [IGNORE_INDEX] * 2
    assert "attention_mask" in batch.model_kwargs()


def _token_losses(model, batch) -> torch.Tensor:
    """Per-token losses at trained positions, in row-major order."""
    with torch.no_grad():
        logits = model(**batch.model_kwargs()).logits  # [B, T, V]
    # Token t predicts label t+1.
    targets = batch.labels[:, 1:]  # [B, T-1]
    losses = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # [B, T-1]
    return losses[targets != IGNORE_INDEX]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked(tiny_model, tiny_qwen3_tokenizer, attn):
    tok = tiny_qwen3_tokenizer
    rendered = [
        render_sft_example(
            tok,
            SFTExample(
                id=f"r{i}",
                prompt_messages=[{"role": "user", "content": f"Prove claim {i}."}],
                reasoning="Let me think. " * (i + 1),
                response=f"Proof. Case {i} holds.",
            ),
        )
        for i in range(4)
    ]
    tiny_model.set_attn_implementation(attn)
    try:
        bins = pack_examples(rendered, max_tokens=sum(len(e) for e in rendered[:3]))
        assert len(bins) == 2 and len(bins[0]) > 1  # real packing, and a padded row
        packed = collate_packed(bins, pad_id=tok.pad_token_id)
        assert packed.num_trained_tokens() == sum(sum(t != IGNORE_INDEX for t in e.labels) for e in rendered)
        # Unpacked reference, one sample per forward, in the packed order.
        reference = torch.cat(
            [_token_losses(tiny_model, collate_padded([e], tok.pad_token_id)) for b in bins for e in b]
        )
        got = _token_losses(tiny_model, packed)
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)
        # Sums in float64: a float32 sum of ~100 losses is only good to ~1e-4.
        torch.testing.assert_close(got.double().sum(), reference.double().sum(), atol=1e-4, rtol=0)
        # A right-padded multi-row batch (attention mask path) agrees too.
        padded = _token_losses(tiny_model, collate_padded([e for b in bins for e in b], tok.pad_token_id))
        torch.testing.assert_close(padded, reference, atol=1e-5, rtol=0)
    finally:
        tiny_model.set_attn_implementation("sdpa")
