"""SFT under DDP and FSDP2 on CPU: 2 gloo processes on the same global batch as 1 process reach
the same weights. The ranks can pack different numbers of micro-batches (small token
budget, uneven lengths), which exercises the equal-count padding: without it the
rank with fewer micro-batches would leave the other waiting in an all-reduce.

The global normaliser (target tokens of the step over all ranks) makes the gradient
independent of the split; what remains is summation order, within 1e-5 here (plain
AdamW at lr 1e-3). The logged grad_norm is the clip's global norm on rank 0, compared
with one process's. Lightning's FSDPStrategy (FSDP1) cannot run the step and is refused."""
from __future__ import annotations

import pytest
import torch

from tests.distributed.launch import final_weights, qed_fit, run_dir, step_metrics

pytestmark = pytest.mark.slow


def _fit(model_dir, root, devices, strategy="ddp", check=True, export=False):
    return qed_fit([
        "--config", "configs/demo/sft.yaml", f"--model.model={model_dir}", "--model.lr=1e-3",
        "--model.lr_schedule=constant", "--model.warmup_ratio=0", "--data.samples_per_step=8",
        "--data.micro_batch_tokens=600", "--data.max_length=600", "--trainer.max_steps=3",
        "--trainer.enable_progress_bar=false", "--checkpoint.every_n_train_steps=3",
    ], root, devices, strategy, check=check, export=export)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    _fit(tiny_model_dir, root, 1)
    return root


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_fine_tune_like_one_process(strategy, one_process, tiny_model_dir, tiny_model, tmp_path):
    """``fsdp2``: each decoder layer and the loss module are FSDP2 units (ModelParallelStrategy)."""
    one, two = one_process, tmp_path / "two"
    _fit(tiny_model_dir, two, 2, strategy, export=True)
    m1, m2 = step_metrics(one), step_metrics(two)
    assert len(m1) == len(m2) == 3
    for key in ("train/loss", "train/target_tokens", "train/grad_norm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in m2]), torch.tensor([r[key] for r in m1]),
                                   rtol=1e-5, atol=1e-6, msg=key)
    w1, w2 = final_weights(one, "lm."), final_weights(two, "lm.")
    init = {f"lm.policy.{k}": v for k, v in tiny_model.state_dict().items()}
    assert max(float((w1[k] - init[k]).abs().max()) for k in w1) > 1e-3, "the runs did not train"
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-5, msg=k)
    # the end-of-fit export holds the trained weights (under FSDP2 gathered by every rank,
    # written by rank 0)
    from safetensors.torch import load_file

    exported = load_file(str(run_dir(two) / "hf_export" / "model.safetensors"))
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, w2[f"lm.policy.{name}"], rtol=0, atol=0, msg=name)


def test_fsdp1_strategy_stops_every_rank_with_a_clear_error(tiny_model_dir, tmp_path):
    """Lightning's FSDPStrategy wraps the whole module in one FSDP1 unit and runs the
    step inside its forward, where FSDP1 cannot run the step's backward passes: both
    ranks stop at the first step, naming the strategy to use, instead of failing in
    FSDP1's internals (or, for the clip, with each rank's shard clipped by its own norm)."""
    proc = _fit(tiny_model_dir, tmp_path, 2, "fsdp1", check=False)
    assert proc.returncode != 0
    message = "trainer.strategy FSDPStrategy (FSDP1) is not supported"
    assert proc.stderr.count(message) >= 2, proc.stderr[-4000:]  # rank 0's and rank 1's
    assert "ModelParallelStrategy" in proc.stderr
    assert "Expects `BACKWARD_PRE`" not in proc.stderr
