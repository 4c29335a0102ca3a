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


# The paper configs' precision too: fp32 master weights, bf16 compute under autocast,
# a bf16 engine (the weights pushed in fp32 and rounded by the engine's copy).
PRECISIONS = {"fp32": ("32-true", None), "bf16-mixed": ("bf16-mixed", "bfloat16")}


@pytest.mark.parametrize("loss,lr,precision", [("qed_nano", 2e-3, "fp32"), ("dapo", 2e-3, "fp32"),
                                               ("qed_nano", 2e-3, "bf16-mixed")])
def test_mean_reward_rises_well_beyond_noise(loss, lr, precision, tiny_model_dir, tmp_path):
    trainer_precision, engine_dtype = PRECISIONS[precision]
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Say something about {i}.",
                                            "rubrics": "-"}) + "\n" for i in range(8)))
    pl.seed_everything(0)
    module = GRPOModule(
        model=str(tiny_model_dir), judge=RuleJudge(f"{__name__}:share_of_e", answer_mode="whole"),
        engine=EngineSettings(dtype=engine_dtype, max_model_len=256, kv_cache_memory_bytes=64 << 20),
        sampling=SamplingSettings(temperature=1.0, max_tokens=16, n=8), loss=loss, lr=lr, max_grad_norm=1.0,
        micro_batch_tokens=512, records=RecordSettings(every_n_steps=0),
    )
    log = RewardLog()
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", precision=trainer_precision, logger=False,
                         enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[log], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=RolloutDataModule(str(problems), id_column="id", prompts_per_step=4, seed=0))
    r = torch.tensor(log.rewards)
    first, last = r[:5], r[-5:]
    noise = first.std()
    print(f"{loss} {precision}: reward {first.mean():.3f} -> {last.mean():.3f} (first-5 std {noise:.3f})")
    assert last.mean() > first.mean() + max(3 * noise, 0.1)
    if engine_dtype is not None:
        assert_engine_holds_the_rounded_master(module, getattr(torch, engine_dtype))


def assert_engine_holds_the_rounded_master(module, dtype):
    """After the last step's push of the fp32 master, the engine samples exactly as after
    a push of the master rounded to its dtype: its copy rounds to nearest, as ``.to`` does."""
    prompts = [module.tokenizer("Say something about 3.")["input_ids"]]
    sampling = SamplingSettings(temperature=1.0, max_tokens=16, n=4)
    seeds = [[11, 12, 13, 14]]
    pushed = module.engine.generate(prompts, sampling, seeds)
    module.engine.load_weights({k: v.to(dtype) for k, v in module.policy.state_dict().items()}, version=-1)
    rounded = module.engine.generate(prompts, sampling, seeds)
    assert [c.completion_ids for c in pushed[0]] == [c.completion_ids for c in rounded[0]]
    assert [c.logprobs for c in pushed[0]] == [c.logprobs for c in rounded[0]]
