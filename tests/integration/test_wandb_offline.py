"""The demos with the W&B preset in offline mode (no server, no account), read back from
W&B's own files; the model card and the hub upload of their exports, with the hub
client replaced at its boundary (no machine here reaches the hub).

SFT: 2 steps inside a (simulated) SLURM job, then its requeued start resumes to 4: one
W&B run id for both. RL: 2 steps with the TensorBoard preset too.
"""
import csv
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from wandb_offline import offline_runs

from qed_lightning.cli import run_cli

pytestmark = pytest.mark.slow
wandb = pytest.importorskip("wandb", reason="wandb is a dev dependency (make install)")

ROOT = Path(__file__).resolve().parents[2]
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "qed-test", "SLURM_PROCID": "0",
         "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
CANARIES = {"HF_TOKEN": "hf_canary_7d1e0c9b5a", "WANDB_API_KEY": "wandb_canary_0123456789abcdef0123456789abcdef"}
REPO = "someone/qed-demo-sft"


class FakeHub:
    """Stands in for ``huggingface_hub.HfApi``: records each call, and ``work_done()``
    (how far the work was) when the repo was created."""

    def __init__(self, work_done) -> None:
        self.calls, self.work_done = [], work_done

    def api(self, token=None):
        hub = self

        class Api:
            def create_repo(self, repo_id, **kw):
                hub.calls.append(("create_repo", token, repo_id, kw, hub.work_done()))
                return f"https://huggingface.co/{repo_id}"

            def upload_folder(self, repo_id, folder_path, **kw):
                files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.is_file()}
                hub.calls.append(("upload_folder", token, repo_id, kw, files))
                return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

        return Api()


def end_of_process() -> None:
    """What the end of a ``qed fit`` process does to W&B: the run ends and W&B's service
    process stops (a service left running would resolve the next run's relative
    ``save_dir`` against the directory it started in)."""
    wandb.finish()
    wandb.teardown()


class LogLines(logging.Handler):
    """Every log line of the runs, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(self.format(record))


def sft_args(model_dir, steps, *extra):
    return ["fit", "--config", str(ROOT / "configs/demo/sft.yaml"), "--config", str(ROOT / "callbacks/wandb.yaml"),
            f"--model.model={model_dir}", f"--trainer.max_steps={steps}", "--trainer.enable_progress_bar=false",
            "--checkpoint.every_n_train_steps=1", f"--export.push_to_hub={REPO}", *extra]


@pytest.fixture(scope="module")
def sft(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb_sft")
    run_dir = root / "runs" / "demo-sft" / "slurm_4242"
    hub = FakeHub(lambda: (run_dir / "metrics.csv").is_file() and bool(csv_rows(run_dir)))  # a step trained?
    log = LogLines()
    logging.getLogger().addHandler(log)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logging.getLogger("qed_lightning"), "level", logging.DEBUG)
        mp.chdir(root)  # the presets write under ./runs
        for key, value in {**SLURM, **CANARIES, "WANDB_MODE": "offline", "WANDB_DIR": str(root / "wandb")}.items():
            mp.setenv(key, value)
        mp.setattr("huggingface_hub.HfApi", hub.api)
        first = run_cli(sft_args(tiny_model_dir, 2))
        end_of_process()  # the requeued start is a new process
        resumed = run_cli(sft_args(tiny_model_dir, 4, "--ckpt_path=last"))
        end_of_process()
    logging.getLogger().removeHandler(log)
    assert first.trainer.global_step == 2 and resumed.trainer.global_step == 4
    return SimpleNamespace(root=root, run_dir=run_dir, hub=hub, model_dir=tiny_model_dir, log=log.lines)


def csv_rows(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def test_sft_wandb_run_holds_every_step_and_the_resolved_config_and_resumes_the_same_run(sft):
    runs = offline_runs(sft.root / "runs")
    assert [r.run_id for r in runs] == ["slurm_4242", "slurm_4242"]  # the requeued start continues the run
    steps = [[h["trainer/global_step"] for h in r.history if "train/loss" in h] for r in runs]
    assert steps == [[0, 1], [2, 3]]
    logged = {h["trainer/global_step"]: h for r in runs for h in r.history if "train/loss" in h}
    for row in csv_rows(sft.run_dir):
        for key in ("train/loss", "train/grad_norm", "train/lr", "train/tokens"):
            assert logged[int(row["step"])][key] == pytest.approx(float(row[key]), rel=1e-6), key
    for run, max_steps in zip(runs, (2, 4)):
        config = run.config["resolved_config"]
        assert config["trainer"]["max_steps"] == max_steps
        assert config["model"]["class_path"] == "qed_lightning.modules.SFTModule"
        assert config["model"]["init_args"]["model"] == str(sft.model_dir)
        assert config["export"]["push_to_hub"] == REPO
        assert run.config["lr"] == 1.0e-4  # the module's own hyperparameters, as Lightning logs them


def test_sft_export_card_matches_the_run(sft):
    from huggingface_hub import ModelCard

    export = sft.run_dir / "hf_export"
    card = ModelCard.load(export / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "sft" in meta["tags"] and "base_model" not in meta  # a local base model has no hub id
    rows = csv_rows(sft.run_dir)
    assert "- Optimizer steps trained: 4\n" in card.text
    target_tokens = sum(float(r["train/target_tokens"]) for r in rows)
    assert f"- Trained (target) tokens: {target_tokens:,.0f}\n" in card.text
    assert f"| train/loss | {float(rows[-1]['train/loss']):.4g} |" in card.text
    assert f"| base model | local: {sft.model_dir.name} |" in card.text
    assert yaml.safe_load((export / "qed_config.yaml").read_text()) == yaml.safe_load(
        (sft.run_dir / "config.yaml").read_text())


def test_sft_push_creates_a_private_repo_before_training_and_uploads_the_export(sft):
    calls = sft.hub.calls
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"] * 2  # the first start, then the resumed one
    create, upload = calls[0], calls[1]
    assert create[1] == CANARIES["HF_TOKEN"] and create[2] == REPO  # the token from the environment
    assert create[3]["private"] is True
    assert create[4] is False  # created before any step was trained
    files = calls[-1][4]
    assert {"README.md", "config.json", "model.safetensors", "qed_config.yaml", "qed_run.json"} <= set(files)
    assert files["README.md"] == (sft.run_dir / "hf_export" / "README.md").read_bytes()


def test_no_secret_from_the_environment_lands_in_the_export_or_the_run_files(sft):
    leaked = [str(p.relative_to(sft.root)) for p in sft.root.rglob("*") if p.is_file()
              and any(v.encode() in p.read_bytes() for v in CANARIES.values())]
    assert not leaked
    assert any("pushed hf_export to the hub" in line for line in sft.log)  # the push's own lines were caught
    assert not [line for line in sft.log if any(v in line for v in CANARIES.values())]
    uploaded = sft.hub.calls[-1][4]
    assert not [name for name, data in uploaded.items() if any(v.encode() in data for v in CANARIES.values())]


def share_of_e(problem, answer):
    return min(7, round(70 * answer.lower().count("e") / max(len(answer), 1)))


def test_rl_demo_logs_metrics_config_and_rollout_tables_to_wandb_and_tensorboard(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    pytest.importorskip("tensorboardX", reason="tensorboardX is a dev dependency (make install)")
    from tensorboard_events import tensorboard_scalars

    from qed_lightning.loggers.rollout_table import COLUMNS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    cli = run_cli([
        "fit", "--config", str(ROOT / "configs/demo/rl.yaml"), "--config", str(ROOT / "callbacks/wandb.yaml"),
        "--config", str(ROOT / "callbacks/tensorboard.yaml"), f"--model.model={tiny_model_dir}",
        "--model.judge=qed_lightning.judging.RuleJudge", f"--model.judge.rule={__name__}:share_of_e",
        "--model.judge.answer_mode=whole", "--model.engine.max_model_len=512",
        "--model.engine.kv_cache_memory_bytes=67108864", "--model.sampling.max_tokens=24", "--model.sampling.n=4",
        "--model.micro_batch_tokens=256", "--data.prompts_per_step=3", "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false", "--checkpoint.every_n_train_steps=2",
    ])
    end_of_process()
    run_dir = Path(cli.trainer.log_dir)
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("reward/mean")]
    [run] = offline_runs(tmp_path / "runs")
    by_step = {h["trainer/global_step"]: h for h in run.history if "reward/mean" in h}
    assert sorted(by_step) == [0, 1]
    for row in rows:
        for key in ("reward/mean", "train/loss", "train/grad_norm", "rollout/completion_tokens_mean"):
            assert by_step[int(row["step"])][key] == pytest.approx(float(row[key]), rel=1e-6), key
    assert run.config["resolved_config"]["model"]["init_args"]["sampling"]["n"] == 4
    assert run.config["resolved_config"]["trainer"]["max_steps"] == 2
    # the rollout samples table of each step: W&B writes its rows beside the run
    tables = {h["trainer/global_step"]: h for h in run.history if "rollouts/path" in h}
    assert sorted(tables) == [0, 1]
    for step, entry in tables.items():
        table = json.loads((run.directory / "files" / entry["rollouts/path"]).read_text())
        records = (run_dir / "rollouts" / f"step_{step:06d}.jsonl").read_text().splitlines()
        assert table["columns"] == list(COLUMNS) and len(table["data"]) == len(records) == entry["rollouts/nrows"]
    # TensorBoard's event files: the same per-step scalars
    scalars = tensorboard_scalars(tmp_path / "runs")
    assert sorted(step for tag, step, _ in scalars if tag == "reward/mean") == [0, 1]
    for row in rows:
        [value] = [v for tag, step, v in scalars if tag == "reward/mean" and step == int(row["step"])]
        assert value == pytest.approx(float(row["reward/mean"]), rel=1e-6)
    # the export's card: an RL stage of 2 steps, its last reward measured by this run
    card = (run_dir / "hf_export" / "README.md").read_text()
    assert "- Stage: **RL**" in card and "- Optimizer steps trained: 2\n" in card
    assert f"| reward/mean | {float(rows[-1]['reward/mean']):.4g} |" in card
    completion = sum(float(r["rollout/completion_tokens"]) for r in rows)
    assert f"- Completion tokens sampled: {completion:,.0f}\n" in card
    assert os.path.isfile(run_dir / "hf_export" / "qed_config.yaml")


def test_qed_export_of_an_intermediate_checkpoint_writes_its_card_and_pushes_it(sft, tmp_path, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    from qed_lightning.cli import main

    out = tmp_path / "step3"
    hub = FakeHub(lambda: out.exists())
    monkeypatch.setattr("huggingface_hub.HfApi", hub.api)
    monkeypatch.setenv("HF_TOKEN", CANARIES["HF_TOKEN"])
    main(["export", str(sft.run_dir / "checkpoints" / "step000003.ckpt"), str(out), "--push_to_hub", REPO])
    assert "exported to" in capsys.readouterr().out
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][3]["private"] is True and hub.calls[0][4] is False  # created before the export
    card = ModelCard.load(out / "README.md")
    rows = [r for r in csv_rows(sft.run_dir) if int(r["step"]) < 3]
    assert "- Optimizer steps trained: 3\n" in card.text
    assert f"| train/loss | {float(rows[-1]['train/loss']):.4g} |" in card.text
    assert (out / "qed_config.yaml").read_text() == (sft.run_dir / "config.yaml").read_text()
    assert hub.calls[1][4]["README.md"] == (out / "README.md").read_bytes()


def test_a_checkpoint_away_from_its_run_gets_a_card_from_its_own_settings(sft, tmp_path):
    import shutil

    from qed_lightning.export import export_checkpoint

    moved = tmp_path / "elsewhere" / "last.ckpt"  # no config.yaml, metrics.csv beside it
    moved.parent.mkdir()
    shutil.copy(sft.run_dir / "checkpoints" / "last.ckpt", moved)
    out = export_checkpoint(str(moved), str(tmp_path / "out"))
    text = (out / "README.md").read_text()
    assert "- Stage: **SFT**" in text and "- Optimizer steps trained: 4\n" in text
    assert f"| base model | local: {sft.model_dir.name} |" in text and "| learning rate | 0.0001 |" in text
    assert "| demo | – | train | not pinned |" in text  # the data module's saved settings
    assert not (out / "qed_config.yaml").exists()
