"""The step-time model of bench/async_projection.py: exact values per schedule, and
the background schedule's closed form is the fixed point of its defining recurrence."""
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from async_projection import PaperRun, paper_projection, predicted_step_s  # noqa: E402


def test_each_schedule_waits_for_what_it_should():
    g, j, r, p = 10.0, 6.0, 4.0, 1.0
    assert predicted_step_s("sequential", g, j, r, p) == 21.0
    assert predicted_step_s("judge_overlap", g, j, r, p, parts=3) == 17.0
    assert predicted_step_s("lag1_inline", g, j, r, p) == 15.0  # grading done within R + P + G
    assert predicted_step_s("lag1_inline", 1.0, 9.0, 1.0, 1.0) == 9.0  # 1 + (9 - 3) + 1 + 1
    assert predicted_step_s("lag1_background", g, j, r, p) == 11.0  # generation-bound
    assert predicted_step_s("lag1_background", 2.0, 1.0, 8.0, 1.0) == 9.0  # training-bound
    assert predicted_step_s("lag1_background", 2.0, 12.0, 3.0, 1.0) == 9.0  # grading-bound: half the sum
    with pytest.raises(ValueError, match="unknown schedule"):
        predicted_step_s("lag3", g, j, r, p)


def test_the_background_closed_form_is_the_recurrences_fixed_point():
    """T = max(G, W + R) + P with W = max(0, G + J - T): the step waits for batch t's
    verdicts, which end G + J after the previous step began."""
    rng = random.Random(0)
    for _ in range(1000):
        g, j, r, p = (rng.uniform(0, 10) for _ in range(4))
        t = predicted_step_s("lag1_background", g, j, r, p)
        assert t == pytest.approx(max(g, max(0.0, g + j - t) + r) + p)
        assert t <= predicted_step_s("sequential", g, j, r, p) + 1e-12


def test_the_paper_projection_is_generation_bound():
    run = PaperRun()
    out = paper_projection(run)
    st = out["stages_s"]
    assert st["G"] == pytest.approx(49_152 / 40.0)  # one wave: 1,120 slots for 1,024 samples
    assert out["schedules"]["lag1_background"]["step_s"] == pytest.approx(st["G"] + st["P"])
    assert out["schedules"]["sequential"]["speedup"] == 1.0
