import csv

import pytest

from qed_lightning.cli.demo import summarize, summarize_rl


def write(path, rows):
    keys = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    return path


def test_rl_summary_reads_rewards_and_stage_times(tmp_path):
    rows = [{"reward/mean": 0.25, "judge/failure_rate": 0.5, "time/rollout_s": 10, "time/train_s": 4, "time/sync_s": 0.2},
            {"train/lr": 1e-5},  # a row of another logger call: skipped
            {"reward/mean": 0.5, "judge/failure_rate": 0.0, "time/rollout_s": 20, "time/train_s": 6, "time/sync_s": 0.4}]
    s = summarize_rl(write(tmp_path / "m.csv", rows))
    assert s["steps"] == 2 and s["rewards"] == [0.25, 0.5]
    assert s["judge_failure_rate"] == 0.25 and s["rollout_s"] == 15 and s["train_s"] == 5
    assert s["sync_s"] == pytest.approx(0.3)


def test_sft_summary_and_empty_logs(tmp_path):
    rows = [{"train/loss": 2.0, "train/tokens": 100, "train/step_time_s": 1.0},
            {"train/loss": 1.5, "train/tokens": 300, "train/step_time_s": 1.0}]
    assert summarize(write(tmp_path / "s.csv", rows)) == {"steps": 2, "tokens_per_s": 200.0, "loss_first": 2.0,
                                                          "loss_last": 1.5}
    with pytest.raises(RuntimeError, match="no training steps"):
        summarize_rl(write(tmp_path / "e.csv", [{"train/lr": 1.0}]))
