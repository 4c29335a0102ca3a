"""Rollout building blocks: batch tensors, seeds, problem order, records, problem rows."""
import json

import pytest
import torch

from qed_lightning.contracts import Completion, Problem, Verdict
from qed_lightning.data.sources import DataSourceError, SourceRow
from qed_lightning.rollouts.batch import build_rollout_batch
from qed_lightning.rollouts.datamodule import problems_for_step
from qed_lightning.rollouts.problems import ProblemColumns, rows_to_problems
from qed_lightning.rollouts.records import RolloutRecorder
from qed_lightning.rollouts.seeds import sample_seed


def comp(prompt, completion, reason="stop", version=3):
    return Completion(prompt, completion, [-0.5 * (i + 1) for i in range(len(completion))], reason, f"t{completion}", version)


def test_batch_tensors_line_up_prompt_and_completion_tokens():
    groups = [[comp([1, 2], [3, 4, 5]), comp([1, 2], [6], "length")], [comp([7], [8, 9])]]
    verdicts = [Verdict(7), Verdict(None, error="timeout: x"), Verdict(0)]
    b = build_rollout_batch([Problem("a", "A"), Problem("b", "B")], groups, verdicts,
                            torch.tensor([1.0, 0.0, 0.0]), torch.tensor([True, False, True]), pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 6, 0, 0], [7, 8, 9, 0, 0]]
    assert b.completion_mask.int().tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]
    assert b.attention_mask.int().tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert b.sampling_logprobs.tolist() == [[0, 0, -0.5, -1.0, -1.5], [0, 0, -0.5, 0, 0], [0, -0.5, -1.0, 0, 0]]
    assert b.group_ids.tolist() == [0, 0, 1] and b.truncated.tolist() == [False, True, False]
    assert b.weight_version == 3 and b.num_completion_tokens == 6 and b.reward_mask.tolist() == [True, False, True]


def test_mixed_weight_versions_are_refused():
    with pytest.raises(ValueError, match="several weight versions"):
        build_rollout_batch([Problem("a", "A")], [[comp([1], [2], version=1), comp([1], [3], version=2)]],
                            [Verdict(0)] * 2, torch.zeros(2), torch.ones(2, dtype=torch.bool), 0)


def test_sample_seeds_are_stable_and_distinct():
    assert sample_seed(0, 5, "p1", 2) == sample_seed(0, 5, "p1", 2)
    seeds = {sample_seed(s, t, p, j) for s in (0, 1) for t in (0, 1) for p in ("a", "b") for j in range(4)}
    assert len(seeds) == 32 and all(0 <= x < 2**31 for x in seeds)


def test_problem_order_walks_seeded_epochs_without_repeats():
    problems = [Problem(f"p{i}", "s") for i in range(5)]
    ids = [p.id for t in range(5) for p in problems_for_step(problems, t, 2, seed=3)]
    assert sorted(ids[:5]) == sorted(ids[5:10]) == [f"p{i}" for i in range(5)]  # each epoch is a permutation
    assert ids[:5] != ids[5:10] or ids[:5] != [f"p{i}" for i in range(5)]
    assert [p.id for p in problems_for_step(problems, 3, 2, seed=3)] == ids[6:8]  # a step depends on its index only


def rows(*values):
    return [SourceRow(f"f.jsonl:{i + 1}", i, v) for i, v in enumerate(values)]


def test_rows_to_problems_maps_columns_and_filters_difficulty():
    data = rows({"problem": "P0", "rubrics": "R0", "reward_mean": 0.3, "reward_std": 0.2},
                {"problem": "P1", "rubrics": "R1", "reward_mean": 0.9, "reward_std": 0.2},
                {"problem": "P2", "rubrics": "R2", "reward_mean": 0.3, "reward_std": 0.01})
    problems, filtered = rows_to_problems(data, ProblemColumns(), difficulty_filter=True)
    assert [(p.id, p.statement, p.rubric) for p in problems] == [("row0", "P0", "R0")] and filtered == 2
    assert len(rows_to_problems(data, ProblemColumns())[0]) == 3


@pytest.mark.parametrize("values,message", [
    ({"rubrics": "R"}, r"f.jsonl:1: column 'problem' is missing"),
    ({"problem": "  ", "rubrics": "R"}, r"f.jsonl:1: column 'problem' is empty \(blank\)"),
])
def test_bad_rows_are_named(values, message):
    with pytest.raises(DataSourceError, match=message):
        rows_to_problems(rows(values), ProblemColumns())


def test_difficulty_filter_without_its_columns_says_so():
    with pytest.raises(DataSourceError, match=r"f.jsonl:1: column 'reward_mean' is missing \(the difficulty filter needs it"):
        rows_to_problems(rows({"problem": "P"}), ProblemColumns(), difficulty_filter=True)


def test_recorder_bounds_volume(tmp_path):
    groups = [[comp([1], [2, 3]), comp([1], [4])], [comp([5], [6])]]
    b = build_rollout_batch([Problem("a", "A"), Problem("b", "B")], groups, [Verdict(7), Verdict(0), Verdict(3)],
                            torch.tensor([1.0, 0.0, 3 / 7]), torch.ones(3, dtype=torch.bool), 0)
    rec = RolloutRecorder(tmp_path, every_n_steps=2, max_groups=1, max_chars=3)
    assert rec.write(1, b) is None
    path = rec.write(4, b)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["problem_id"], x["score"], x["text"], x["text_chars"]) for x in lines] == [
        ("a", 7, "t[2", len("t[2, 3]")), ("a", 0, "t[4", len("t[4]"))]
    assert lines[0]["weight_version"] == 3 and lines[0]["step"] == 4


def test_a_completion_without_tokens_stays_in_the_batch_with_its_reward():
    empty = Completion([1, 2], [], [], "stop", "", 0)
    b = build_rollout_batch([Problem("a", "A")], [[empty, comp([1, 2], [3], version=0)]],
                            [Verdict(0, origin="no_answer"), Verdict(7)], torch.tensor([0.0, 1.0]),
                            torch.ones(2, dtype=torch.bool), pad_id=0)
    assert b.num_samples == 2 and b.completion_mask[0].sum() == 0 and b.rewards.tolist() == [0.0, 1.0]


def test_empty_source_is_an_error_at_setup(tmp_path):
    from qed_lightning.rollouts.datamodule import RolloutDataModule

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"problem": "P", "rubrics": "R", "reward_mean": 0.9, "reward_std": 0.3}) + "\n")
    dm = RolloutDataModule(str(path), difficulty_filter=True, prompts_per_step=1)
    with pytest.raises(DataSourceError, match="no problems left \\(1 removed by the difficulty filter\\)"):
        dm.setup("fit")


def test_tensor_bytes_counts_tied_tensors_once():
    from qed_lightning.engines.weights import tensor_bytes

    w = torch.zeros(4, 8)
    assert tensor_bytes({"embed": w, "lm_head": w, "norm": torch.zeros(8)}) == 4 * 8 * 4 + 8 * 4
