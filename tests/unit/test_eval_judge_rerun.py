"""A rerun with another judge regrades every item instead of mixing two judges' verdicts
into one number; the earlier judge's verdicts stay in records.jsonl and in the report,
in rows of their own."""
import json

import pytest

from qed_lightning.evaluation.records import EvalRecord
from qed_lightning.evaluation.runner import evaluate
from qed_lightning.evaluation.store import EvalStore
from qed_lightning.judging import RuleJudge
from qed_lightning.reasoning_cache.trajectory import TurnOutput


class Policy:
    """Writes 'e' * (sample + 1); counts its calls."""

    calls = 0

    def generator(self, role, sample_index):
        def generate(messages):
            Policy.calls += 1
            return [TurnOutput(f"<think>x</think>{'e' * (sample_index + 1)} proof", 5) for _ in messages]
        return generate

    def count_tokens(self, text):
        return len(text.split())

    def max_prompt_tokens(self):
        return None


def count_e(problem, answer):  # judge A: 1 for sample 0, 2 for sample 1
    return min(7, answer.count("e"))


def triple_e(problem, answer):  # judge B: 3 for sample 0, 6 for sample 1
    return min(7, 3 * answer.count("e"))


class CrashingJudge(RuleJudge):
    """Judge A, whose grader dies on its second chunk (a crash mid-grading)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunks = 0

    def grade(self, items):
        self.chunks += 1
        if self.chunks == 2:
            raise RuntimeError("grader died")
        return super().grade(items)


class CountingJudge(RuleJudge):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graded = 0

    def grade(self, items):
        self.graded += len(items)
        return super().grade(items)


def run(judge, tmp_path):
    return evaluate(Policy(), "demo", judge=judge, samples=2, output_dir=str(tmp_path), chunk_size=4,
                    progress=False, model_label="m")


def test_a_rerun_with_a_second_judge_regrades_everything_and_keeps_the_first_apart(tmp_path):
    with pytest.raises(RuntimeError, match="grader died"):
        run(CrashingJudge(f"{__name__}:count_e"), tmp_path)  # judge A graded the first chunk of 4 only
    out = tmp_path / "demo" / "m"
    first = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(first) == 4 and {r["score"] for r in first} == {1}
    calls = Policy.calls
    judge_b = CountingJudge(f"{__name__}:triple_e")
    summary = run(judge_b, tmp_path)
    assert Policy.calls == calls  # the generations are reused
    assert judge_b.graded == 12  # all 12 items, the 4 that judge A graded included
    # judge B alone: run 0 scores 3/7, run 1 6/7 -> 64.29 %, std (3/7)/sqrt 2 = 30.30 %
    assert summary["avg"] == pytest.approx((3 / 7 + 6 / 7) / 2 * 100)
    assert summary["spread"] == pytest.approx(300 / 7 / 2 ** 0.5)
    assert summary["graded"] == 12
    lines = [EvalRecord.from_dict(json.loads(x)) for x in (out / "records.jsonl").read_text().splitlines()]
    by_judge = {}
    for r in lines:
        by_judge.setdefault(r.judge, []).append(r.score)
    label_a, label_b = f"CrashingJudge {__name__}:count_e", f"CountingJudge {__name__}:triple_e"
    assert sorted(by_judge[label_b]) == [3] * 6 + [6] * 6 and by_judge[label_a] == [1] * 4  # nothing lost
    md = (out / "report.md").read_text()
    assert f"| m | this evaluation (k=2) | {label_b} | 64.3 (30.3) |" in md
    assert f"| m | this evaluation (k=2) | {label_a} | 14.3 |" in md  # A's 4 graded samples, run 0 only


def test_the_store_keeps_judges_apart(tmp_path):
    def rec(judge, score, sample=0):
        return EvalRecord("demo", "m", "p1", sample, "", "", 1, "stop", score, judge=judge)

    store = EvalStore(tmp_path)
    store.add_records([rec("A", 1), rec("B", 5), rec("A", 2)])  # A's newest line for p1/0 counts
    again = EvalStore(tmp_path)
    with pytest.raises(ValueError, match="2 judges"):
        again.records  # noqa: B018  (no judge chosen: which verdicts would be meant?)
    again.select_judge("A")
    assert {k: r.score for k, r in again.records.items()} == {("p1", 0): 2}
    assert [r.score for r in again.other_judges()] == [5]
    assert again.other_judges([("p1", 1)]) == []
    again.select_judge("C")
    assert again.records == {} and sorted(r.score for r in again.other_judges()) == [2, 5]
    single = tmp_path / "single"
    EvalStore(single).add_records([rec("A", 3)])
    assert [r.score for r in EvalStore(single).records.values()] == [3]  # one judge: no choice needed
