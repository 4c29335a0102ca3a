"""Which samples an RL step trains on (``training_mask``), and that the step applies it:
a left-out sample changes nothing in the gradient, a kept one does."""
import json

import lightning.pytorch as pl
import pytest
import torch

from qed_lightning.contracts import Completion, Problem, SamplingSettings, Verdict
from qed_lightning.judging import RuleJudge
from qed_lightning.losses.advantages import group_mean, training_mask
from qed_lightning.losses.policy import StepNorms
from qed_lightning.modules import GRPOModule
from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
from qed_lightning.rollouts import RolloutDataModule
from qed_lightning.rollouts.batch import build_rollout_batch
from qed_lightning.rollouts.microbatch import pack_rollouts

# three groups of three: group 1's valid rewards are all 3/7 (its masked sample has another
# reward), so its advantages are 0; sample 1 and sample 8 hit max_tokens
REWARDS = torch.tensor([1.0, 0.0, 4 / 7, 3 / 7, 1.0, 3 / 7, 6 / 7, 2 / 7, 5 / 7])
VALID = torch.tensor([True, True, True, True, False, True, True, False, True])
TRUNCATED = torch.tensor([False, True, False, False, False, False, False, False, True])
GROUPS = torch.arange(9) // 3


@pytest.mark.parametrize("overlong,zero_groups,want", [
    (False, False, [1, 1, 1, 1, 0, 1, 1, 0, 1]),
    (True, False, [1, 0, 1, 1, 0, 1, 1, 0, 0]),
    (False, True, [1, 1, 1, 0, 0, 0, 1, 0, 1]),
    (True, True, [1, 0, 1, 0, 0, 0, 1, 0, 0]),
])
def test_training_mask_by_hand(overlong, zero_groups, want):
    adv = group_mean(REWARDS, GROUPS, VALID)  # [9]
    assert adv[3:6].tolist() == [0.0, 0.0, 0.0] and (adv[[0, 1, 2, 6, 8]] != 0).all()
    keep = training_mask(VALID, TRUNCATED, adv, GROUPS, overlong, zero_groups)
    assert keep.tolist() == [bool(w) for w in want]
    assert VALID.tolist() == [True, True, True, True, False, True, True, False, True]  # inputs untouched


def rollouts():
    g = torch.Generator().manual_seed(1)
    groups = []
    for p in range(3):
        prompt = torch.randint(3, 800, (4 + p,), generator=g).tolist()
        group = []
        for k in range(3):
            comp = torch.randint(3, 800, (3 + k,), generator=g).tolist()
            finish = "length" if TRUNCATED[3 * p + k] else "stop"
            group.append(Completion(prompt, comp, (-6 - torch.rand(len(comp), generator=g)).tolist(), finish, "x", 0))
        groups.append(group)
    verdicts = [Verdict(round(float(r) * 7)) if v else Verdict(None, error="timeout: made up")
                for r, v in zip(REWARDS, VALID)]
    return build_rollout_batch([Problem(f"q{i}", "-") for i in range(3)], groups, verdicts, REWARDS, VALID, pad_id=0)


def module(model_dir, **kw):
    return GRPOModule(model=str(model_dir), judge=RuleJudge("qed_lightning.judging.rules:contains_letter_e"),
                      loss="qed_nano", loss_args={"entropy_coef": 0.01}, max_grad_norm=0.0,
                      sampling=SamplingSettings(temperature=0.8, max_tokens=5, n=3), micro_batch_tokens=64, **kw)


def micro_batch_grads(m, batch, keep):
    """The step's gradient through the micro-batch path, for a given mask."""
    adv = group_mean(batch.rewards, batch.group_ids, batch.reward_mask)
    lengths = torch.where(keep, batch.completion_mask.sum(1), 0)  # [N]
    norms = StepNorms(samples=batch.num_samples, tokens=int(lengths.sum()), max_tokens=5, seq_lengths=lengths)
    m.policy.zero_grad(set_to_none=True)
    for mb in pack_rollouts(batch, adv, keep, 64, pad_id=0):
        m._micro_loss(mb, norms)[0].backward()
    return {n: p.grad.clone() for n, p in m.policy.named_parameters() if p.grad is not None}


def same(a, b):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-8) for k in a)


class GradCapture(pl.Callback):
    def __init__(self):
        self.grads = None

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}


def test_the_rl_step_trains_on_exactly_the_mask(tiny_model_dir, tmp_path, monkeypatch):
    """A one-step fit with both filters on, its rollouts replaced by the batch above:
    the gradient before the optimizer step is the micro-batch gradient of the mask, and
    differs from the one of every sample that the mask leaves out."""
    batch = rollouts()
    monkeypatch.setattr("qed_lightning.modules.grpo.step_rollouts", lambda *args: (batch, False))
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "problem": "P", "rubrics": "-"}) + "\n" for i in range(3)))
    fitted = module(tiny_model_dir, engine=EngineSettings(backend="hf"), overlong_filtering=True,
                    filter_zero_advantage_groups=True, records=RecordSettings(every_n_steps=0))
    capture = GradCapture()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[capture], default_root_dir=tmp_path)
    trainer.fit(fitted, datamodule=RolloutDataModule(str(problems), id_column="id", prompts_per_step=3, seed=0))
    assert trainer.callback_metrics["train/kept_samples"] == 3 and trainer.callback_metrics["train/skipped"] == 0

    reference = module(tiny_model_dir)
    reference.configure_model()  # the initial weights, as the fit's step saw them
    adv = group_mean(batch.rewards, batch.group_ids, batch.reward_mask)
    keep = training_mask(batch.reward_mask, batch.truncated, adv, batch.group_ids, True, True)
    assert keep.tolist() == [True, False, True, False, False, False, True, False, False]
    want = micro_batch_grads(reference, batch, keep)
    assert same(capture.grads, want)
    # each sample the mask drops would have moved the gradient
    for i in (1, 3, 5, 8):
        more = keep.clone()
        more[i] = True
        assert not same(micro_batch_grads(reference, batch, more), want), i
