"""The SFT loss is a mean over every trained token of the optimizer step: packing,
micro-batching and splitting across ranks must not change value or gradient."""
import copy

import pytest
import torch
import torch.nn.functional as F

from qed_lightning.data.rendering import SFTExample, render_sft_example
from qed_lightning.data.steps import StepCollator
from qed_lightning.modules.lm_loss import CausalLMWithLoss
from qed_lightning.modules.sft import accumulate_step_gradients


@pytest.fixture(scope="module")
def examples(tiny_qwen3_tokenizer):
    texts = [("Show 2 is even.", "2 = 2*1.", "Since 2 = 2 * 1, it is even."),
             ("Prove 1 < 2.", "Add one.", "1 + 1 = 2 > 1."),
             ("Is 9 odd?", "9 = 2*4+1 so yes, odd, checking carefully.", "9 = 2 * 4 + 1."),
             ("Show a^2 >= 0.", "squares.", "A square of a real is non-negative.")]
    return [
        render_sft_example(
            tiny_qwen3_tokenizer,
            SFTExample(id=f"e{i}", prompt_messages=[{"role": "user", "content": p}], reasoning=r, response=a),
        )
        for i, (p, r, a) in enumerate(texts)
    ]


def grads_of(lm, steps, world_size):
    """Average of per-rank gradients (what DDP's all-reduce produces)."""
    global_targets = sum(s.num_target_tokens for s in steps)
    per_rank, loss = [], 0.0
    for step in steps:
        lm.zero_grad()
        loss += float(accumulate_step_gradients(lm, step, global_targets=global_targets, world_size=world_size))
        per_rank.append([p.grad.clone() for p in lm.parameters()])
    avg = [torch.stack(g).mean(0) for g in zip(*per_rank)]
    return loss / global_targets, avg


def reference_loss(model, examples):
    """Plain logits + F.cross_entropy over every trained token, one sample at a time."""
    total, count = 0.0, 0
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        labels = torch.tensor([ex.labels])
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]  # [1, T-1, V]
        total += F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), reduction="sum", ignore_index=-100)
        count += int((labels[:, 1:] != -100).sum())
    return total / count


def test_packing_microbatching_and_ranks_leave_the_loss_unchanged(tiny_model, tiny_qwen3_tokenizer, examples):
    torch.manual_seed(0)
    # A copy: the session fixture is shared and .double() converts in place.
    lm = CausalLMWithLoss(copy.deepcopy(tiny_model), "chunked", chunk_size=16).double()
    pad = tiny_qwen3_tokenizer.pad_token_id
    longest = max(len(e) for e in examples)
    one_row = StepCollator(pad, packing=True, micro_batch_tokens=10_000, micro_batch_size=1)
    many_rows = StepCollator(pad, packing=True, micro_batch_tokens=longest, micro_batch_size=1)
    padded = StepCollator(pad, packing=False, micro_batch_tokens=0, micro_batch_size=3)
    assert len(one_row(examples).micro_batches) == 1 and len(many_rows(examples).micro_batches) >= 3

    base_loss, base_grads = grads_of(lm, [one_row(examples)], world_size=1)
    with torch.no_grad():
        ref = reference_loss(lm.policy, examples)
    assert base_loss == pytest.approx(float(ref), rel=1e-10)

    variants = {
        "packed micro-batches": grads_of(lm, [many_rows(examples)], world_size=1),
        "padded micro-batches": grads_of(lm, [padded(examples)], world_size=1),
        # Two ranks with unequal token counts: a per-rank mean would weigh them wrongly.
        "two ranks": grads_of(lm, [one_row(examples[:1]), one_row(examples[1:])], world_size=2),
    }
    for name, (loss, grads) in variants.items():
        assert loss == pytest.approx(base_loss, rel=1e-10), name
        for g, b in zip(grads, base_grads):
            torch.testing.assert_close(g, b, rtol=1e-9, atol=1e-12, msg=name)


def test_auto_loss_warns_when_cuda_has_no_liger(caplog):
    import logging

    from qed_lightning.modules.sft import default_loss

    with caplog.at_level(logging.WARNING, logger="qed_lightning.modules.sft"):
        assert default_loss(cuda=True, liger=True) == "liger"
        assert default_loss(cuda=False, liger=False) == "chunked"
        assert caplog.text == ""
        assert default_loss(cuda=True, liger=False) == "chunked"
    assert "install liger-kernel" in caplog.text
