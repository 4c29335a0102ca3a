"""AnswerBench scoring protocols: which answers reach the grader, with what text, and
what each protocol scores without it. The grader is a scripted client behind a real
``LLMJudge`` with the ``answer_match`` template, so the rendered prompts are the ones a
server would get."""
import csv
import json
import re
import threading

import pytest

from qed_lightning.contracts import Problem
from qed_lightning.evaluation.answer_grading import ANSWER_PROTOCOLS, grader_text
from qed_lightning.evaluation.runner import evaluate
from qed_lightning.judging import JudgeReply, LLMJudge
from qed_lightning.judging.templates import load_template
from qed_lightning.reasoning_cache.trajectory import TurnOutput

_FENCED = re.compile(r"BEGIN PROOF (\w+)\n(.*)\nEND PROOF \1", re.DOTALL)


class Grader:
    """Answers 7 when the fenced answer contains ``SAME``, else 0; records what it was shown."""

    def __init__(self):
        self.shown, self.prompts, self.lock = [], [], threading.Lock()

    def complete(self, requests):
        with self.lock:
            self.prompts += [r.prompt for r in requests]
            self.shown += [_FENCED.search(r.prompt).group(2) for r in requests]
        return [JudgeReply("<points>7 out of 7</points>" if "SAME" in _FENCED.search(r.prompt).group(2)
                           else "They differ.\n<points>0 out of 7</points>") for r in requests]

    def fingerprint(self):
        return {"model": "scripted"}


def problem(pid, answer):
    return Problem(pid, f"Problem {pid}: find it.", metadata={"short_answer": answer})


SIX_LINES = "line 1\nline 2\nline 3\nline 4\nline 5\nSo it is 3, SAME."
CASES = [  # (id, reference, completion)
    ("multi", "$1, 2$", r"<think>t</think>So $\boxed{1}$ and $\boxed{2}$."),  # a certain match
    ("wrong", "3", r"<think>t</think>The answer is $\boxed{4}$."),  # a definite mismatch
    ("long_no_box", "3", "<think>t</think>" + SIX_LINES),
    ("short_no_box", "3", "<think>t</think>It is 3.\nSAME"),
    ("empty_box", "3", "<think>t</think>" + SIX_LINES + r" $\boxed{}$"),
    ("cut", "3", r"<think>the budget ran out at \boxed{3}"),  # truncated: 0 without a call
    ("self_eval", "6", "<think>t</think>Answer: $\\boxed{5}$\n## Self Evaluation\nSurely $\\boxed{6}$."),
    ("prose", "even $n$", r"<think>t</think>$\boxed{\text{all even } n}$ SAME"),  # the checker cannot tell
    ("failed", "3", None),  # the policy's server gave up
]
PROBLEMS = {pid: problem(pid, ref) for pid, ref, _ in CASES}
CHUNK = [dict(problem_id=pid, sample=0, text=text or "", tokens=1, finish_reason="stop",
              error=None if text is not None else "http_503: gave up") for pid, _, text in CASES]


def grade(protocol):
    grader = Grader()
    judge = LLMJudge(grader, template="answer_match", answer_mode="whole")
    out = ANSWER_PROTOCOLS[protocol].grade(CHUNK, PROBLEMS, judge, "after_think")
    return dict(zip([pid for pid, _, _ in CASES], out)), grader


def test_paper_protocol_grades_every_answer_but_certain_matches():
    out, grader = grade("paper")
    assert grader.shown == ["4", "..." + "\n".join(SIX_LINES.split("\n")[-5:]), "It is 3.\nSAME",
                            "...line 2\nline 3\nline 4\nline 5\nSo it is 3, SAME. $\\boxed{}$",
                            "5", r"\text{all even } n"]
    assert out["multi"] == ("1,2", 7, None, "checker")  # every box on the last line, no call
    assert out["wrong"] == ("4", 0, None, "judge")  # a mismatch is the grader's to call, not the checker's
    assert out["long_no_box"][1:] == (7, None, "judge") and out["short_no_box"][1:] == (7, None, "judge")
    assert out["empty_box"][1:] == (7, None, "judge")
    assert out["cut"] == ("", 0, None, "no_answer")
    assert out["self_eval"] == ("5", 0, None, "judge")  # cut at the heading before the box is read
    assert out["prose"][1:] == (0, None, "judge")  # "SAME" is outside the box: the grader saw only the box
    assert out["failed"] == ("", None, "generation: http_503: gave up", "generation")
    # the grader sees the problem and the short answer as the reference
    wrong = grader.prompts[0]
    assert "Problem wrong: find it." in wrong and "## Reference answer\n\n3\n" in wrong


def test_grader_only_variant_sends_certain_matches_too():
    out, grader = grade("paper_grader_only")
    assert grader.shown[0] == "1,2" and len(grader.shown) == 7
    assert out["multi"] == ("1,2", 0, None, "judge")  # the scripted grader says 0: its verdict stands


def test_checker_protocol_asks_only_about_what_it_cannot_compare():
    out, grader = grade("checker")
    assert grader.shown == [r"\text{all even } n"]
    assert out["multi"] == ("1,2", 7, None, "checker") and out["wrong"] == ("4", 0, None, "checker")
    assert out["long_no_box"] == ("", 0, None, "no_box") and out["cut"] == ("", 0, None, "no_box")
    assert out["empty_box"] == ("", 0, None, "checker")  # an empty box is a mismatch here
    assert out["prose"] == (r"\text{all even } n", 0, None, "judge_fallback")
    alone = ANSWER_PROTOCOLS["checker"].grade(CHUNK, PROBLEMS, None, "after_think")
    assert alone[7][1] is None and alone[7][2].startswith("undecided")


@pytest.mark.parametrize("text, shown", [
    (r"so $\boxed{7}$", "7"),
    ("a\nb\nc\nd\ne\nf", "...b\nc\nd\ne\nf"),
    ("a\nb\nc\nd\ne", "...a\nb\nc\nd\ne"),  # five lines: all of them, still marked as an excerpt
    ("a\nb\nc\nd", "a\nb\nc\nd"),
])
def test_grader_text(text, shown):
    assert grader_text(text) == shown


def test_protocols_that_grade_with_the_judge_refuse_a_missing_or_misconfigured_one():
    with pytest.raises(ValueError, match="answer_protocol 'paper' grades answers with an LLM judge"):
        ANSWER_PROTOCOLS["paper"].check("paper", None)
    thinking = LLMJudge(Grader(), template="answer_match", answer_mode="after_think")
    with pytest.raises(ValueError, match="needs answer_mode: whole"):
        ANSWER_PROTOCOLS["paper"].check("paper", thinking)
    with pytest.raises(ValueError, match="needs answer_mode: whole"):
        ANSWER_PROTOCOLS["checker"].check("checker", thinking)
    ANSWER_PROTOCOLS["checker"].check("checker", None)  # the checker alone needs nothing


def test_answer_match_prompt_keeps_the_answerbench_grader_rules():
    # eval/configs/prompts/answerbench.txt, rule by rule (our own wording in the template)
    rules = {"final_answer_only", "equivalent_forms", "algebraic_equivalence", "numerical_equivalence",
             "unordered_collections", "no_partial_credit", "incomplete_is_wrong", "no_clear_answer_is_wrong",
             "excerpt_may_replace_box", "state_both_answers", "try_to_prove_equal", "binary_verdict"}
    template = load_template("answer_match")
    assert set(template.rules) == rules and template.scale == (0, 7)
    assert all(line in template.body for line in template.rules.values())


class BoxingPolicy:
    def __init__(self, answers):
        self.answers = answers

    def generator(self, role, sample_index):
        def generate(messages):
            return [TurnOutput(f"<think>t</think>So $\\boxed{{{self.answers[m.split(chr(10))[0]]}}}$.", 3)
                    for m in messages]
        return generate

    def count_tokens(self, text):
        return len(text.split())

    def max_prompt_tokens(self):
        return None


@pytest.mark.parametrize("protocol, calls, label", [
    ("paper", 1, "scripted / answer_match, paper protocol"),
    ("checker", 0, "answer checker + scripted / answer_match, checker protocol"),
])
def test_evaluate_labels_each_record_with_its_protocol(tmp_path, protocol, calls, label):
    source = tmp_path / "answers.csv"
    with source.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Problem ID", "Problem", "Short Answer", "Category", "Subcategory", "Source"])
        w.writerow(["a-1", "What is 1+1?", "2", "Algebra", "x", "y"])
        w.writerow(["a-2", "What is 2+2?", "4", "Algebra", "x", "y"])
    grader = Grader()
    judge = LLMJudge(grader, template="answer_match", answer_mode="whole")
    policy = BoxingPolicy({"What is 1+1?": "2", "What is 2+2?": "5"})
    summary = evaluate(policy, "answerbench", source=str(source), judge=judge, answer_protocol=protocol, samples=1,
                       output_dir=str(tmp_path / "out"), progress=False, model_label="m")
    records = [json.loads(x) for x in (tmp_path / "out" / "answerbench" / "m" / "records.jsonl").read_text().splitlines()]
    assert {r["judge"] for r in records} == {label}
    assert sorted((r["problem_id"], r["score"]) for r in records) == [("a-1", 7), ("a-2", 0)]
    assert len(grader.shown) == calls and summary["answer_protocol"] == protocol


def test_evaluate_refuses_an_unknown_protocol_or_a_missing_judge_before_generating(tmp_path):
    class Untouchable(BoxingPolicy):
        def generator(self, role, sample_index):
            raise AssertionError("generated before the settings were checked")

    with pytest.raises(ValueError, match="answer_protocol must be one of"):
        evaluate(Untouchable({}), "answerbench", source="unused.csv", answer_protocol="fast", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="grades answers with an LLM judge"):
        evaluate(Untouchable({}), "answerbench", source="unused.csv", answer_protocol="paper", output_dir=str(tmp_path))
