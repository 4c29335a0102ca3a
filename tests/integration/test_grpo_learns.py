"""RL must learn, not just run: with a rule reward (the share of the letter e in the
answer), a few dozen GRPO steps on the tiny model raise the mean reward far beyond
its step-to-step noise, for each loss the suite can afford."""
import json

import lightning.pytorch as pl
import pytest
import torch

from qed_lightning.contracts import SamplingSettings
from qed_lightning.judging import RuleJudge
from qed_lightning.modules import GRPOModule
from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
from qed_lightning.rollouts import RolloutDataModule

pytestmark = pytest.mark.slow
STEPS = 30


def share_of_e(problem, answer):
    return min(7, round(14 * answer.lower().count("e") / max(len(answer), 1)))


class RewardLog(pl.Callback):
    def __init__(self):
        self.rewards = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rewards.append(float(trainer.callback_metrics["reward"]))


@pytest.mark.parametrize("loss,lr", [("qed_nano", 2e-3), ("dapo", 2e-3)])
def test_mean_reward_rises_well_beyond_noise(loss, lr, tiny_model_dir, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Say something about {i}.",
                                            "rubrics": "-"}) + "\n" for i in range(8)))
    pl.seed_everything(0)
    module = GRPOModule(
        model=str(tiny_model_dir), judge=RuleJudge(f"{__name__}:share_of_e", answer_mode="whole"),
        engine=EngineSettings(max_model_len=256, kv_cache_memory_bytes=64 << 20),
        sampling=SamplingSettings(temperature=1.0, max_tokens=16, n=8), loss=loss, lr=lr, max_grad_norm=1.0,
        micro_batch_tokens=512, records=RecordSettings(every_n_steps=0),
    )
    log = RewardLog()
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[log], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=RolloutDataModule(str(problems), id_column="id", prompts_per_step=4, seed=0))
    r = torch.tensor(log.rewards)
    first, last = r[:5], r[-5:]
    noise = first.std()
    print(f"{loss}: reward {first.mean():.3f} -> {last.mean():.3f} (first-5 std {noise:.3f})")
    assert last.mean() > first.mean() + max(3 * noise, 0.1)
