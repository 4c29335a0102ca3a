"""The model card of an export: YAML metadata and body from the run's own files, the
results of `qed eval` on the export, the paper's numbers labelled apart, no secrets."""
import csv
import json

import yaml
from huggingface_hub import ModelCard

from qed_lightning.hub.eval_results import record_export_eval
from qed_lightning.hub.model_card import CONFIG_FILE, EVAL_FILE, write_card_files
from qed_lightning.hub.run_facts import collect_run_facts

SFT_CONFIG = {
    "seed_everything": 42,
    "trainer": {"max_epochs": 5, "precision": "bf16-mixed"},
    "model": {"class_path": "qed_lightning.modules.SFTModule",
              "init_args": {"model": "Qwen/Qwen3-4B-Thinking-2507", "lr": 3.0e-5, "lr_schedule": "cosine"}},
    "data": {"class_path": "qed_lightning.data.sft.SFTDataModule",
             "init_args": {"source": "lm-provers/FineProofs-SFT", "config_name": "default", "split": "train",
                           "revision": "9f1c2ab", "samples_per_step": 32}},
}


def write_run(log_dir, config, rows):
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (log_dir / "run_metadata.json").write_text(json.dumps({"git": {"commit": "abc123def", "dirty": False}}))
    columns = sorted({k for r in rows for k in r})
    with (log_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return log_dir


def export_with_card(tmp_path, config, rows, steps, name="export"):
    log_dir = write_run(tmp_path / "run", config, rows)
    out = tmp_path / name
    out.mkdir()
    write_card_files(out, collect_run_facts(config, steps, log_dir), (log_dir / "config.yaml").read_text())
    return out


SFT_ROWS = [{"step": s, "train/loss": 2.0 - 0.1 * s, "train/target_tokens": 1000 + s, "train/tokens": 1500 + s}
            for s in range(6)] + [{"step": 4, "val/loss": 1.25}, {"step": 6, "val/loss": 1.0}]


def test_card_metadata_parses_and_matches_the_run(tmp_path):
    out = export_with_card(tmp_path, SFT_CONFIG, SFT_ROWS, steps=4)  # exported at step 4 of a 6-step log
    card = ModelCard.load(out / "README.md")
    assert card.data.to_dict() == {
        "base_model": "Qwen/Qwen3-4B-Thinking-2507", "datasets": ["lm-provers/FineProofs-SFT"],
        "library_name": "transformers", "license": "apache-2.0", "pipeline_tag": "text-generation",
        "tags": ["qed-lightning", "sft", "olympiad-proofs"]}
    text = card.text
    assert "- Stage: **SFT**" in text and "- Optimizer steps trained: 4\n" in text
    # the rows of steps 0..3 only: what the step-4 export has trained
    assert "- Trained (target) tokens: 4,006\n" in text and "- Tokens processed (prompts included): 6,006\n" in text
    assert "| train/loss | 1.7 |" in text  # step 3's, not the log's last (step 5)
    assert "| val/loss | 1.25 |" in text  # logged after step 4's update: part of this export
    assert "| lm-provers/FineProofs-SFT | default | train | 9f1c2ab |" in text
    assert "| learning rate | 3e-05 |" in text and "| seed | 42 |" in text
    assert "git commit abc123def\n" in text
    assert yaml.safe_load((out / CONFIG_FILE).read_text()) == SFT_CONFIG


def test_an_rl_export_from_a_local_sft_export_names_the_hub_model_it_descends_from(tmp_path):
    sft = export_with_card(tmp_path / "sft", SFT_CONFIG, SFT_ROWS, steps=6, name="sft_export")
    rl_config = {"model": {"class_path": "qed_lightning.modules.GRPOModule",
                           "init_args": {"model": str(sft), "loss": "qed_nano", "reasoning_cache": {"iterations": 3},
                                         "sampling": {"n": 16, "temperature": 0.8}}},
                 "data": {"init_args": {"source": str(tmp_path / "problems.jsonl"), "prompts_per_step": 32}}}
    rows = [{"step": s, "reward/mean": 2.0 + s, "rollout/completion_tokens": 100.0} for s in range(3)]
    out = export_with_card(tmp_path / "rl", rl_config, rows, steps=3)
    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["base_model"] == "Qwen/Qwen3-4B-Thinking-2507" and meta["license"] == "apache-2.0"
    assert "datasets" not in meta and "reasoning-cache" in meta["tags"]  # a local file is no hub dataset
    assert "- Stage: **RC**" in card.text
    assert "- Base model: local: sft_export (itself trained from Qwen/Qwen3-4B-Thinking-2507)" in card.text
    assert "| group size n | 16 |" in card.text and "- Completion tokens sampled: 300\n" in card.text
    assert str(tmp_path) not in card.text  # no path of the machine the run was on


def test_no_secret_from_the_environment_or_the_config_reaches_the_export(tmp_path, monkeypatch):
    canaries = {"HF_TOKEN": "hf_canary_aa11bb22cc33", "WANDB_API_KEY": "wandb_canary_dd44ee55ff66"}
    for key, value in canaries.items():
        monkeypatch.setenv(key, value)
    config = json.loads(json.dumps(SFT_CONFIG))
    config["model"]["init_args"]["judge"] = {"init_args": {"client": {"init_args": {
        "api_key": "sk-config-secret-1234", "api_key_env": "OPENAI_API_KEY", "model": "judge-model"}}}}
    config["data"]["init_args"]["source"] = f"owner/data-{canaries['HF_TOKEN']}"  # however a value got there
    out = export_with_card(tmp_path, config, SFT_ROWS, steps=4)
    written = {p.name: p.read_text() for p in out.iterdir()}
    for name, text in written.items():
        for secret in (*canaries.values(), "sk-config-secret-1234"):
            assert secret not in text, (name, secret)
    saved = yaml.safe_load(written[CONFIG_FILE])["model"]["init_args"]["judge"]["init_args"]["client"]["init_args"]
    assert saved == {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "model": "judge-model"}


SUMMARY = {"avg": 41.27, "spread": 2.14, "pass_at_1": 38.0, "pass_at_k": 55.5, "accuracy": 20.0,
           "tokens_mean": 812.4, "runs": [40.0, 43.0, 40.8], "problems": 60, "failed": 1}


def test_eval_results_of_an_export_reach_its_card_and_a_rerun_replaces_them(tmp_path):
    out = export_with_card(tmp_path, SFT_CONFIG, SFT_ROWS, steps=6)
    assert "Not evaluated yet" in (out / "README.md").read_text()
    record_export_eval(str(out), "imo_proofbench", {**SUMMARY, "avg": 10.0}, "gpt-oss-20b / imo_proofbench", 3)
    card = record_export_eval(str(out), "imo_proofbench", SUMMARY, "gpt-oss-20b / imo_proofbench", 3)
    text = card.read_text()
    assert len(json.loads((out / EVAL_FILE).read_text())) == 1  # the rerun replaced its entry
    assert "| imo_proofbench | gpt-oss-20b / imo_proofbench | 3 | avg@3 41.3 (2.1) | 38.0 | 55.5 | 812 | 60 |" in text
    measured, published = text.split("### Published numbers (QED-Nano paper, not measured here)")
    assert "### Measured on this model with `qed eval`" in measured and "paper:" not in measured
    assert "| paper: QED-Nano | 40.0 (0.6) |" in published  # the paper's imo_proofbench column only
    assert "proofbench avg@3" not in published.replace("imo_proofbench avg@3", "")
    answer = {**SUMMARY, "accuracy": 57.5, "answer_protocol": "paper"}
    text = record_export_eval(str(out), "answerbench", answer, "gpt-oss-20b / answer_match", 1).read_text()
    assert "| answerbench | gpt-oss-20b / answer_match | 1 | accuracy 57.5% |" in text
    assert record_export_eval("Qwen/Qwen3-4B-Thinking-2507", "imo_proofbench", SUMMARY, "j", 3) is None
    assert record_export_eval(str(tmp_path / "run"), "imo_proofbench", SUMMARY, "j", 3) is None  # no qed export


class ScriptedPolicy:
    """An EnginePolicy stand-in on an export folder: writes 'e' * (sample + 1)."""

    def __init__(self, model):
        self.model = model

    def generator(self, role, sample_index):
        from qed_lightning.reasoning_cache.trajectory import TurnOutput

        return lambda messages: [TurnOutput(f"<think>x</think>{'e' * (sample_index + 1)} proof", 5) for _ in messages]

    def count_tokens(self, text):
        return len(text.split())

    def max_prompt_tokens(self):
        return None


def count_e(problem, answer):
    return min(7, answer.count("e"))


def test_qed_eval_of_an_export_writes_its_report_numbers_into_the_card(tmp_path):
    from qed_lightning.evaluation.runner import evaluate
    from qed_lightning.judging import RuleJudge

    out = export_with_card(tmp_path, SFT_CONFIG, SFT_ROWS, steps=6)
    summary = evaluate(ScriptedPolicy(str(out)), "demo", judge=RuleJudge(f"{__name__}:count_e"), samples=2,
                       output_dir=str(tmp_path / "eval"), progress=False, model_label="export")
    report = (tmp_path / "eval" / "demo" / "export" / "report.md").read_text()
    headline = next(line for line in report.splitlines() if line.startswith("| export |"))
    _, _, judge, score = [c.strip() for c in headline.strip("|").split("|")][:4]
    card = (out / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| demo |"))
    assert row.startswith(f"| demo | {judge} | 2 | avg@2 {score} | {summary['pass_at_1']:.1f} |"), (row, headline)


def test_the_evaluation_callbacks_last_result_reaches_the_card_with_its_judge(tmp_path):
    from types import SimpleNamespace

    from qed_lightning.callbacks.evaluation import EvaluationCallback
    from qed_lightning.callbacks.export import _training_eval
    from qed_lightning.judging import RuleJudge

    callback = EvaluationCallback(benchmark="demo", every_n_steps=2, samples=2)
    callback.history = [(2, {**SUMMARY, "avg": 11.0}), (4, SUMMARY)]
    module = SimpleNamespace(judge=RuleJudge(f"{__name__}:count_e"))  # an RL run grades with its own judge
    during = _training_eval(SimpleNamespace(callbacks=[callback]), module)
    log_dir = write_run(tmp_path / "run", SFT_CONFIG, SFT_ROWS)
    (tmp_path / "export").mkdir()
    write_card_files(tmp_path / "export", collect_run_facts(SFT_CONFIG, 4, log_dir, during))
    text = (tmp_path / "export" / "README.md").read_text()
    section = text.split("### Measured during training (evaluation callback)")[1]
    assert f"| 4 | demo | RuleJudge {__name__}:count_e | 2 | avg@2 41.3 (2.1) | 60 |" in section
    assert _training_eval(SimpleNamespace(callbacks=[]), module) is None
