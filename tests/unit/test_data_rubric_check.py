"""The 7-point marking-scheme checker on valid and broken schemes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qed_lightning.data_pipeline.rubric_check import check_rubric, clean_rubric

VALID = """## Checkpoints (7 points total)
- (3 pts) Key lemma.
- (2 pts) Induction step.
- (2 pts) Conclusion.
Total: 7 points

## Zero credit
- Small cases.

## Deductions
- -1: arithmetic slip.
- cap at 3/7: only one direction."""

CHAINS = """## Checkpoints
- (1 pt) Common setup.
Chain A
- (4 pts) Invariant.
- (2 pts) Finish.
**Chain B**
- [3 points] Coloring.
- [3 points] Counting.
Total: 7 points

## Zero credit
- nothing
## Deductions
- -2: gap."""


def test_valid_schemes_pass():
    assert check_rubric(VALID).ok and check_rubric(VALID).chains == {"main": 7}
    check = check_rubric(CHAINS)
    assert check.ok, check.issues
    assert check.chains == {"A": 7, "B": 7}  # common 1 point counted in every chain, chains never summed


def test_shipped_demo_rubrics_pass():
    path = Path(__file__).resolve().parents[2] / "src/qed_lightning/data/demo/proofs.jsonl"
    rubrics = [json.loads(line)["rubric"] for line in path.read_text().splitlines()]
    assert all(check_rubric(r).ok for r in rubrics)


@pytest.mark.parametrize("text, issue", [
    (VALID.replace("(2 pts) Conclusion", "(3 pts) Conclusion"), "checkpoints total 8 points, not 7"),
    (CHAINS.replace("[3 points] Counting", "[2 points] Counting"), "chain B totals 6 points, not 7"),
    (VALID.replace("(3 pts) Key", "(2.5 pts) Key"), "non-integer points '2.5'"),
    (VALID.split("## Zero credit")[0] + "## Deductions\n- -1: x", "no zero-credit section"),
    (VALID.split("## Deductions")[0], "no deductions section"),
    ("Some text without structure.", "no checkpoints section"),
    ("## Checkpoints\n- key lemma\n## Zero credit\n- x\n## Deductions\n- -1", "no point values in the checkpoints"),
])
def test_broken_schemes_are_flagged(text, issue):
    check = check_rubric(text)
    assert not check.ok
    assert any(i.startswith(issue) for i in check.issues), check.issues


def test_clean_rubric_drops_thinking_and_preamble():
    reply = "<think>draft (9 pts)</think>Sure, here it is:\n" + VALID
    assert clean_rubric(reply) == VALID
    assert check_rubric(clean_rubric(reply)).ok
