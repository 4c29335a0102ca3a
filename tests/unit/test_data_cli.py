"""`qed data` dispatch: the step list, an unknown step, a step run from the command
line with its config-file settings, and a bad setting named."""
from __future__ import annotations

import json

import pytest

from qed_lightning.cli import main


def test_data_without_a_step_lists_the_steps(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data"])
    assert exit_.value.code == 2
    out = capsys.readouterr().out
    assert all(step in out for step in ("distill", "rubrics", "filter", "difficulty", "decontaminate"))
    with pytest.raises(SystemExit):
        main(["data", "distil"])
    assert "unknown step 'distil'" in capsys.readouterr().err


def test_decontaminate_from_the_command_line_with_sources(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"problem": "Find all primes p such that p + 2 and p + 4 are prime."}) + "\n")
    train = tmp_path / "t.jsonl"
    train.write_text(json.dumps({"problem": "find all primes p such that  p+2 and p+4 are prime"}) + "\n"
                     + json.dumps({"problem": "Another problem."}) + "\n")
    against = json.dumps([{"name": "mine", "benchmark": "custom", "source": "not-read.jsonl"}])
    main(["data", "decontaminate", "--input", str(train), "--output_dir", str(tmp_path / "o"),
          "--against", against, f"--sources.mine={bench}"])
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert summary["kept"] == 1 and summary["matched_per_benchmark"] == {"mine": 1}
    with pytest.raises(SystemExit) as exit_:
        main(["data", "decontaminate", "--input", str(train), "--output_dir", str(tmp_path / "o2"),
              "--against", against, f"--sources.other={bench}"])
    assert exit_.value.code == 2
