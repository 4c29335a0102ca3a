"""The </think> split of teacher completions: edge cases."""
from __future__ import annotations

import pytest

from qed_lightning.data_pipeline.think import split_think


@pytest.mark.parametrize("text, reasoning_field, finish, thinking, expected", [
    # inline thinking: the LAST </think> cuts; an opening <think> is not reasoning
    ("<think>a</think>b</think> Proof.", None, "stop", True, ("a</think>b", "Proof.", False)),
    ("<think>\nplan\n</think>\n\nProof.\n", None, "stop", True, ("plan", "Proof.", False)),
    # the server parsed the thinking out: the field is the reasoning, the content the proof
    ("Proof.", "plan", "stop", True, ("plan", "Proof.", False)),
    # a thinking teacher that never closed its thinking ran out of tokens
    ("still thinking", None, "stop", True, ("", "still thinking", True)),
    # finish_reason length is truncated even when the thinking closed
    ("<think>a</think>Pro", None, "length", True, ("a", "Pro", True)),
    ("", "plan cut", "length", True, ("plan cut", "", True)),
    # a teacher that does not think: the whole text is the proof
    ("Proof.", None, "stop", False, ("", "Proof.", False)),
    # closed thinking, nothing after: not truncated, but an empty proof
    ("<think>a</think>   ", None, "stop", True, ("a", "", False)),
])
def test_split_think_edge_cases(text, reasoning_field, finish, thinking, expected):
    parts = split_think(text, reasoning_field, finish, thinking)
    assert (parts.reasoning, parts.proof, parts.truncated) == expected


def test_drop_reason_orders_truncated_before_empty():
    assert split_think("", "x", "length").drop_reason == "truncated"
    assert split_think("<think>a</think>", None, "stop").drop_reason == "empty_proof"
    assert split_think("<think>a</think>P", None, "stop").drop_reason is None
