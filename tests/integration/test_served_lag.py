"""Bounded lag on a served engine (a real ``vllm serve`` of the tiny model on
127.0.0.1), the batches ahead generated in the background while the trainer trains:

* the same samples, rewards and weights, bit for bit, as the same run generating its
  batches ahead inside the step (lag 1 and lag 2), every sample stamped step - lag;
* generation really ran while the trainer trained, and no push landed while a
  request ran;
* a run resumed from a checkpoint taken mid-lag (batches in flight) ends with the
  uninterrupted run's weights.
"""
import threading

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from qed_lightning.contracts import SamplingSettings
from qed_lightning.judging import RuleJudge
from qed_lightning.modules import GRPOModule
from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
from qed_lightning.rollouts import RolloutDataModule
from test_overlapped_rl import RULE, problems_file
from test_preemption import assert_same_weights

pytestmark = pytest.mark.slow


class WatchedEngine:
    """The run's engine, watched: pushes that land while a generation call runs, and
    generation calls that were running while the trainer was in its backward passes.

    ``hold_call``: the generation call (by index) that starts only once the trainer has
    reached its push (``GRPOModule._drain_engine``), so that it runs when the push comes:
    the tiny model generates a batch faster than it trains one, a real policy's long
    batches do not. The push must then wait for it."""

    def __init__(self, engine, hold_call: int | None = None) -> None:
        self.engine, self.hold_call = engine, hold_call
        self._cond = threading.Condition()
        self.running = self.pushes_while_generating = self.generations_during_training = 0
        self.training, self.phase, self.calls, self.pushes_reached = False, 0, 0, 0
        self.held: list[bool] = []

    def generate(self, *args, **kwargs):
        with self._cond:
            call, self.calls, self.running = self.calls, self.calls + 1, self.running + 1
            seen = (self.training, self.phase)
            if call == self.hold_call:  # a deadlock guard: False if the push never came
                reached = self.pushes_reached
                self.held.append(self._cond.wait_for(lambda: self.pushes_reached > reached, timeout=60))
        try:
            return self.engine.generate(*args, **kwargs)
        finally:
            with self._cond:
                self.running -= 1
                if seen[0] or self.training or self.phase != seen[1]:
                    self.generations_during_training += 1

    def load_weights(self, *args, **kwargs):
        with self._cond:
            self.pushes_while_generating += self.running > 0
        return self.engine.load_weights(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.engine, name)


class Watch(pl.Callback):
    """Wraps the engine once it exists, and marks the trainer's backward phase and the
    moment it reaches its push."""

    def __init__(self, hold_call: int | None = None):
        self.hold_call = hold_call

    def on_train_start(self, trainer, module):
        engine = self.engine = module.engine = module.producer.engine = WatchedEngine(module.engine, self.hold_call)
        accumulate, drain = module._accumulate, module._drain_engine

        def watched_accumulate(*args):
            with engine._cond:
                engine.training, engine.phase = True, engine.phase + 1
            try:
                return accumulate(*args)
            finally:
                engine.training = False

        def watched_drain():
            with engine._cond:
                engine.pushes_reached += 1
                engine._cond.notify_all()
            return drain()

        module._accumulate, module._drain_engine = watched_accumulate, watched_drain


class Metrics(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(tmp_path, server, model_dir, steps, max_lag, background=None, ckpt_path=None, save=False, hold_call=None):
    pl.seed_everything(0)
    module = GRPOModule(
        model=str(model_dir), judge=RuleJudge(RULE, answer_mode="whole"),
        engine=EngineSettings(backend="served", base_urls=(f"http://127.0.0.1:{server.port}",), max_model_len=512,
                              weights_dir=str(tmp_path / "weights")),
        sampling=SamplingSettings(temperature=1.0, max_tokens=24, n=4), lr=2e-3, max_grad_norm=1.0,
        micro_batch_tokens=512, records=RecordSettings(every_n_steps=0), max_lag=max_lag,
        background_generation=background)
    watch, metrics = Watch(hold_call), Metrics()
    callbacks = [watch, metrics]
    if save:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=1,
                                         save_top_k=-1))
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=save,
                         enable_progress_bar=False, callbacks=callbacks, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=RolloutDataModule(str(problems_file(tmp_path)), id_column="id",
                                                     prompts_per_step=3, seed=0), ckpt_path=ckpt_path)
    module.engine.close()
    return module, watch.engine, metrics.rows


def weights(module):
    return {k: v.clone() for k, v in module.policy.state_dict().items()}


@pytest.mark.parametrize("max_lag", [1, 2])
def test_background_generation_trains_like_generation_in_the_step(served_policy, tiny_model_dir, tiny_model,
                                                                  tmp_path, max_lag):
    steps = 4
    inline, inline_engine, inline_rows = fit(tmp_path / "inline", served_policy, tiny_model_dir, steps, max_lag,
                                             background=False)
    # the first batch generated in the background during a step (batch k + 1, at step 1) is held until
    # the trainer reaches its push
    background, engine, rows = fit(tmp_path / "background", served_policy, tiny_model_dir, steps, max_lag,
                                   hold_call=max_lag + 1)
    assert background.hparams.background_generation  # the default for a served engine under lag
    assert [r["reward/mean"] for r in rows] == [r["reward/mean"] for r in inline_rows]
    lags = [min(t, max_lag) for t in range(steps)]
    for key in ("rollout/lag_min", "rollout/lag_mean", "rollout/lag_max"):
        assert [r[key] for r in rows] == lags, key
    assert [r["rollout/too_old_samples"] for r in rows] == [0.0] * steps
    assert [r["rollout/engine_retries"] for r in rows] == [0.0] * steps  # a healthy server: none (and reported)
    assert_same_weights(weights(background), weights(inline))
    start = tiny_model.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in weights(inline).items())  # the steps did move the weights
    # in the background, batches generated while the trainer trained; inside the step never
    assert engine.generations_during_training >= 1 and inline_engine.generations_during_training == 0
    assert engine.held == [True] and engine.pushes_while_generating == 0
    assert rows[1]["time/drain_s"] > 0 and all(r["time/drain_s"] >= 0 for r in rows)


def test_a_run_resumed_mid_lag_on_the_served_engine_matches(served_policy, tiny_model_dir, tmp_path):
    whole, _, whole_rows = fit(tmp_path / "whole", served_policy, tiny_model_dir, 5, 2, save=True)
    saved = torch.load(tmp_path / "whole" / "ckpt" / "step=2.ckpt", map_location="cpu", weights_only=False)
    [share] = saved["qed_state"]["lagged_rollouts"]["shares"]
    assert sorted(share) == ["2", "3"]  # after step 1: batches 2 and 3 in flight, graded
    resumed, _, rows = fit(tmp_path / "resumed", served_policy, tiny_model_dir, 5, 2,
                           ckpt_path=str(tmp_path / "whole" / "ckpt" / "step=2.ckpt"))
    assert [r["rollout/from_saved"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["reward/mean"] for r in rows] == [r["reward/mean"] for r in whole_rows[2:]]
    assert_same_weights(weights(resumed), weights(whole))
