import json

import pytest

from qed_lightning.data.records import SFTColumns, rows_to_sft_examples
from qed_lightning.data.sources import DataSourceError, iter_rows
from qed_lightning.data.steps import StepSampler

COLS = SFTColumns(problem="problem", response="proof", reasoning="reasoning", id="id")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_shipped_demo_dataset_converts_completely():
    examples, report = rows_to_sft_examples(iter_rows("demo"), COLS)
    assert 20 <= len(examples) <= 40 and report.total_skipped == 0
    assert len({e.id for e in examples}) == len(examples)
    assert all(e.reasoning and e.response and e.prompt_messages[-1]["role"] == "user" for e in examples)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": "b", "problem": "P", "reasoning": "r"}, r"rows.jsonl:2: column 'proof' is missing"),
        ({"id": "b", "problem": "", "reasoning": "r", "proof": "x"}, r"rows.jsonl:2: column 'problem' is empty"),
        ({"id": "b", "problem": "P", "reasoning": "r", "proof": 3}, r"rows.jsonl:2: column 'proof' holds an int \(3\); expected text"),
        ({"id": "b", "problem": ["P"], "reasoning": "r", "proof": "x"}, r"rows.jsonl:2: column 'problem' holds a list"),
    ],
)
def test_bad_rows_are_named(tmp_path, bad, message):
    good = {"id": "a", "problem": "P", "reasoning": "r", "proof": "x"}
    path = write_jsonl(tmp_path / "rows.jsonl", [good, bad])
    with pytest.raises(DataSourceError, match=message):
        rows_to_sft_examples(iter_rows(path), COLS)
    examples, report = rows_to_sft_examples(iter_rows(path), COLS, on_bad_row="skip")
    assert [e.id for e in examples] == ["a"] and report.total_skipped == 1


def test_invalid_json_line_and_empty_and_all_bad(tmp_path):
    p = tmp_path / "broken.jsonl"
    p.write_text('{"id": "a", "problem": "P", "reasoning": "r", "proof": "x"}\n{not json\n')
    with pytest.raises(DataSourceError, match=r"broken.jsonl:2: not valid JSON"):
        rows_to_sft_examples(iter_rows(str(p)), COLS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataSourceError, match="empty.jsonl: the file has no rows"):
        rows_to_sft_examples(iter_rows(str(empty)), COLS)
    allbad = write_jsonl(tmp_path / "allbad.jsonl", [{"problem": "P"}])
    with pytest.raises(DataSourceError, match="no usable SFT rows"):
        rows_to_sft_examples(iter_rows(allbad), COLS, on_bad_row="skip")


def test_csv_and_missing_reasoning_column(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("problem,proof\nShow 1+1=2,By counting.\n")
    cols = SFTColumns(problem="problem", response="proof", reasoning=None)
    (ex,), _ = rows_to_sft_examples(iter_rows(str(p)), cols, prompt_template="Prove: {problem}")
    assert ex.id == "rows.csv:2" and ex.reasoning is None
    assert ex.prompt_messages == [{"role": "user", "content": "Prove: Show 1+1=2"}]
    with pytest.raises(DataSourceError, match="data file not found"):
        list(iter_rows(str(tmp_path / "nope.jsonl")))


def test_step_sampler_covers_each_example_once_per_epoch_across_ranks():
    shares = [StepSampler(10, 4, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    steps = [list(s) for s in shares]
    assert len(steps[0]) == len(steps[1]) == 3
    seen = sorted(i for rank_steps in steps for step in rank_steps for i in step)
    assert seen == list(range(10))
    for s in shares:
        s.set_epoch(1)
    assert [list(s) for s in shares] != steps  # reshuffled
    # 9 examples, 4 per step, 4 ranks: the last step has 1 sample; ranks 1..3 get a
    # masked padding copy (negative index) so every rank runs the same step count.
    last = [list(StepSampler(9, 4, shuffle=False, rank=r, world_size=4))[-1] for r in range(4)]
    assert last == [[8], [-9], [-9], [-9]]


def test_a_step_is_split_between_ranks_by_tokens():
    from qed_lightning.data.steps import balance_by_tokens

    lengths = [45, 5, 40, 5, 30, 30]
    # round-robin would give rank 0 [45, 40, 30] = 115 tokens and rank 1 [5, 5, 30] = 40
    # longest first to the lighter rank: 45->r0, 40->r1, 30->r1, 30->r0, 5->r1, 5->r0 (tie: lower rank)
    assert balance_by_tokens([0, 1, 2, 3, 4, 5], lengths, 2) == [[0, 3, 5], [1, 2, 4]]  # 80 / 75 tokens
    assert balance_by_tokens([2, 0], lengths, 2) == [[0], [2]]  # each share keeps the step's order
    # every rank computes the same split: the samplers of all ranks cover the step exactly once
    shares = [list(StepSampler(6, 6, shuffle=True, seed=1, rank=r, world_size=3, lengths=lengths)) for r in range(3)]
    steps = [sorted(i for rank in shares for i in rank[k]) for k in range(len(shares[0]))]
    assert steps == [list(range(6))]
    loads = [sum(lengths[i] for i in rank[0]) for rank in shares]
    assert max(loads) - min(loads) <= max(lengths)
