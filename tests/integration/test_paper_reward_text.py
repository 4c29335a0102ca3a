"""The paper configs' judges grade what the paper graded: the RL and RC reward sees
everything after ``</think>`` (the paper cuts only there); the evaluation configs drop
a trailing self-evaluation section (the paper's evaluation protocol)."""
from pathlib import Path

import pytest
import yaml

from qed_lightning.cli import run_cli
from qed_lightning.contracts import GradingItem, Problem, Verdict

ROOT = Path(__file__).resolve().parents[2]
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32", "--trainer.strategy=auto"]
COMPLETION = ("Let me think about parity.</think>\nProof. Both sides are even, so the claim holds.\n\n"
              "## Self Evaluation\nI am confident the proof is complete.")


@pytest.mark.parametrize("config", ["configs/rl/qed_nano.yaml", "configs/rc/qed_nano_rc.yaml"])
def test_paper_reward_grades_everything_after_think(config, tiny_model_dir, tmp_path):
    cli = run_cli(["--config", str(ROOT / config), f"--model.init_args.model={tiny_model_dir}",
                   f"--trainer.default_root_dir={tmp_path}", *CPU], run=False)
    judge = cli.model.judge
    seen: list[str] = []

    def record(problems, answers):  # stands in for the grader server: records what it would be sent
        seen.extend(answers)
        return [Verdict(score=7, origin="grader", raw="<score>7</score>") for _ in answers]

    judge._grade_answers = record
    judge.grade([GradingItem(Problem(id="p", statement="Show it.", rubric="7 points"), COMPLETION)])
    assert seen == ["Proof. Both sides are even, so the claim holds.\n\n## Self Evaluation\n"
                    "I am confident the proof is complete."]


@pytest.mark.parametrize("config", ["imo_proofbench.yaml", "proofbench.yaml", "answerbench.yaml"])
def test_evaluation_configs_keep_the_paper_protocol_of_stripping_self_evaluation(config):
    judge = yaml.safe_load((ROOT / "configs/eval" / config).read_text())["judge"]
    assert judge["init_args"]["strip_self_evaluation"] is True
