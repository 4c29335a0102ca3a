"""`qed fit --config configs/demo/sft.yaml` end to end with the tiny model: metrics,
checkpoints, an export that reloads with the trained weights, resume, `qed export`."""
import csv
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qed_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs/demo/sft.yaml")


def fit(tmp_path, model_dir, *extra):
    main([
        "fit", "--config", DEMO,
        f"--model.model={model_dir}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.version=run",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.samples_per_step=10",
        "--data.val_fraction=0.1",
        "--checkpoint.every_n_train_steps=2",
        "--model.lr=1e-3",
        "--trainer.limit_val_batches=1.0",
        *extra,
    ])
    return tmp_path / "demo-sft" / "run"


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def first_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    return fit(tmp, tiny_model_dir, "--trainer.max_epochs=2", "--checkpoint.keep_steps=[2]"), tmp


def test_fit_writes_metrics_checkpoints_metadata_and_learns(first_run):
    run_dir, _ = first_run
    rows = [r for r in read_metrics(run_dir) if r.get("train/loss")]
    # 30 demo rows, 10% held out -> 27 train, 10 per step -> 3 steps per epoch.
    assert [int(r["step"]) for r in rows] == list(range(6))
    losses = [float(r["train/loss"]) for r in rows]
    assert losses[-1] < losses[0]
    assert all(float(r["train/tokens_per_s"]) > 0 and float(r["train/target_tokens"]) > 0 for r in rows)
    assert any(r.get("val/loss") for r in read_metrics(run_dir))
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    # keep_last=2, and step 2 kept by keep_steps (as the SFT config keeps the steps RL may start from)
    assert ckpts == ["last.ckpt", "step000002.ckpt", "step000004.ckpt", "step000006.ckpt"], ckpts
    assert (run_dir / "config.yaml").exists()
    meta = (run_dir / "run_metadata.json").read_text()
    assert '"torch"' in meta and '"lightning"' in meta


def test_export_reloads_with_the_trained_weights(first_run):
    run_dir, _ = first_run
    export = run_dir / "hf_export"
    model = AutoModelForCausalLM.from_pretrained(export)
    tok = AutoTokenizer.from_pretrained(export)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[f"lm.policy.{name}"], rtol=0, atol=0, msg=name)
    ids = tok.apply_chat_template([{"role": "user", "content": "Prove 1<2."}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4 or out[0, -1].item() == tok.eos_token_id


def test_resume_continues_the_step_count(first_run, tiny_model_dir):
    run_dir, tmp = first_run
    ckpt = run_dir / "checkpoints" / "step000004.ckpt"
    resumed = fit(tmp / "resumed", tiny_model_dir, "--trainer.max_epochs=3", f"--ckpt_path={ckpt}")
    steps = [int(r["step"]) for r in read_metrics(resumed) if r.get("train/loss")]
    # step000004 was saved after 4 optimizer steps, mid epoch 1; Lightning restarts
    # that epoch's loader, so the run goes on from global step 4 to the end of epoch 2.
    assert steps[0] == 4 and steps[-1] == 8


def test_qed_export_of_an_intermediate_checkpoint(first_run, tmp_path, capsys):
    run_dir, _ = first_run
    main(["export", str(run_dir / "checkpoints" / "step000004.ckpt"), str(tmp_path / "out")])
    assert "exported to" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    state = torch.load(run_dir / "checkpoints" / "step000004.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    name, tensor = next(iter(model.state_dict().items()))
    torch.testing.assert_close(tensor, state[f"lm.policy.{name}"], rtol=0, atol=0)
