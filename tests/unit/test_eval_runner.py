"""`evaluate` with a scripted policy and a rule judge: k samples per problem, records
and report written, and a crash mid-run resumes without redoing finished items."""
import json

import pytest

from qed_lightning.evaluation.runner import evaluate
from qed_lightning.judging import RuleJudge
from qed_lightning.reasoning_cache.trajectory import TurnOutput


class ScriptedPolicy:
    """Writes 'e' * (sample + 1) after a think block; can fail on its n-th call."""

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call, self.messages = 0, fail_on_call, []

    def generator(self, role, sample_index):
        def generate(messages):
            self.calls += 1
            if self.calls == self.fail_on_call:
                raise RuntimeError("engine died")
            self.messages.extend((sample_index, m) for m in messages)
            return [TurnOutput(f"<think>x</think>{'e' * (sample_index + 1)} proof", 5 + sample_index) for _ in messages]
        return generate

    def count_tokens(self, text):
        return len(text.split())

    def max_prompt_tokens(self):
        return None


def count_e(problem, answer):
    return min(7, answer.count("e"))


def run(policy, tmp_path, **kw):
    judge = RuleJudge(f"{__name__}:count_e")
    return evaluate(policy, "demo", judge=judge, samples=2, output_dir=str(tmp_path), chunk_size=4, progress=False,
                    model_label="scripted", **kw)


def test_k_samples_graded_and_reported(tmp_path):
    policy = ScriptedPolicy()
    summary = run(policy, tmp_path)
    out = tmp_path / "demo" / "scripted"
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {(r["sample"], r["score"]) for r in records} == {(0, 1), (1, 2)}  # one 'e' per sample index + 1
    # run 0 scores 1/7, run 1 2/7: avg@2 = mean(14.29, 28.57), spread = their std (ddof 1) = diff / sqrt 2
    assert summary["avg"] == pytest.approx((1 / 7 + 2 / 7) / 2 * 100)
    assert summary["spread"] == pytest.approx((1 / 7 * 100) / 2 ** 0.5)
    assert summary["failure_rate"] == 0 and summary["graded"] == 12
    assert (out / "report.md").is_file() and "scripted" in (out / "report.md").read_text()
    assert all("Generate a rigorous proof" in m for _, m in policy.messages)


def test_a_crash_resumes_without_redoing_finished_items(tmp_path):
    with pytest.raises(RuntimeError, match="engine died"):
        run(ScriptedPolicy(fail_on_call=3), tmp_path)  # sample 0: chunks of 4 + 2 done; sample 1's first chunk dies
    out = tmp_path / "demo" / "scripted"
    assert len((out / "generations.jsonl").read_text().splitlines()) == 6
    again = ScriptedPolicy()
    summary = run(again, tmp_path)
    assert [s for s, _ in again.messages] == [1] * 6  # only sample 1 was generated this time
    assert summary["graded"] == 12
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 12  # nothing graded twice


def test_a_rerun_on_fewer_problems_loses_no_records(tmp_path):
    run(ScriptedPolicy(), tmp_path)
    out = tmp_path / "demo" / "scripted"
    before = sorted((out / "records.jsonl").read_text().splitlines())
    summary = run(ScriptedPolicy(), tmp_path, limit=2)  # the report covers 2 problems; the file keeps all 6
    assert summary["graded"] == 4
    assert sorted((out / "records.jsonl").read_text().splitlines()) == before


IMOBENCH = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imobench"


@pytest.mark.skipif(not (IMOBENCH / "answerbench_v2.csv").is_file(), reason="IMO-Bench CSVs not present")
def test_answers_are_checked_and_failed_generations_counted(tmp_path):
    from qed_lightning.evaluation.benchmarks import load_benchmark

    problems = load_benchmark("answerbench", source=str(IMOBENCH / "answerbench_v2.csv"), limit=3, on_bad_row="skip")
    answers = {p.statement: p.metadata["short_answer"] for p in problems}

    class AnswerPolicy(ScriptedPolicy):
        def generator(self, role, sample_index):
            def generate(messages):
                outs = []
                for i, m in enumerate(messages):
                    statement = next(s for s in answers if s in m)
                    if sample_index == 0:
                        outs.append(TurnOutput(f"<think>t</think>So the answer is \\boxed{{{answers[statement]}}}.", 9))
                    elif i == 0:  # a server that gave up: counted, never a 0
                        outs.append(TurnOutput("", 0, error="http_503: gave up after 4 attempts"))
                    else:
                        outs.append(TurnOutput("<think>t</think>I could not finish.", 4))
                return outs
            return generate

    summary = evaluate(AnswerPolicy(), "answerbench", source=str(IMOBENCH / "answerbench_v2.csv"), limit=3,
                       on_bad_row="skip", samples=2, output_dir=str(tmp_path), progress=False, model_label="m")
    records = [json.loads(x) for x in (tmp_path / "answerbench" / "m" / "records.jsonl").read_text().splitlines()]
    by = {(r["problem_id"], r["sample"]): r for r in records}
    first = problems[0].id
    assert all(by[(p.id, 0)]["score"] == 7 and by[(p.id, 0)]["origin"] == "checker" for p in problems)
    assert by[(first, 1)]["score"] is None and by[(first, 1)]["error"].startswith("generation: http_503")
    assert all(by[(p.id, 1)]["score"] == 0 and by[(p.id, 1)]["origin"] == "no_box" for p in problems[1:])
    assert summary["graded"] == 5 and summary["failure_rate"] == pytest.approx(1 / 6)
    # the failed generation counts as 0 by default (failed_gradings: zero): 3 of 6; left out: 3 of 5
    assert summary["accuracy"] == pytest.approx(3 / 6 * 100)
    assert summary["by_rule"]["leave_out"]["accuracy"] == pytest.approx(3 / 5 * 100)
