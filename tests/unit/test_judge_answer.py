"""What gets graded: the answer after </think>, self-evaluation removed."""
import pytest

from qed_lightning.judging.answer import extract_answer, strip_self_evaluation


def test_after_think_takes_text_after_the_last_close_tag():
    text = "<think>first</think> draft </think>  Final proof.\n"
    assert extract_answer(text).text == "Final proof."
    assert extract_answer(text).skip is None


def test_missing_close_tag_is_truncated_and_empty_answer_is_empty():
    assert extract_answer("<think>still thinking when the budget ran out").skip == "truncated"
    assert extract_answer("<think>done</think>   \n").skip == "empty"
    # self-evaluation alone is no answer either
    assert extract_answer("<think>x</think>\n## Self Evaluation\nAll good.").skip == "empty"


def test_whole_mode_grades_everything_and_still_strips_self_evaluation():
    text = "Proof. Obvious.\n\n## Self Evaluation\nScore: 7/7"
    got = extract_answer(text, mode="whole")
    assert got.text == "Proof. Obvious." and got.skip is None
    assert extract_answer(text, mode="whole", strip_self_eval=False).text == text


@pytest.mark.parametrize("heading", [
    "## Self Evaluation", "# Evaluation", "### Evaluation", "## Final Evaluation", "#### Self Final Evaluation",
    "## **Self Evaluation**", "##**Final Evaluation**", "## Self Evaluation of the proof", "##SelfEvaluation",
])
def test_self_evaluation_headings_start_the_removed_section(heading):
    text = f"Step 1. a.\nStep 2. b.\n{heading}\nI think it deserves <score>7</score>."
    assert strip_self_evaluation(text) == "Step 1. a.\nStep 2. b."


@pytest.mark.parametrize("line", [
    "**Self Evaluation**",  # bold without a "#": not a heading
    "Self-Evaluation:", "## Self-Evaluation", "## self evaluation", "SELF EVALUATION", "## Evaluations",
    "We avoid self evaluation of the lemma by proving it directly.",
    "Self-evaluation: I am confident.",  # a sentence naming it does not cut
    "  ## Self Evaluation",  # a heading starts its line
])
def test_other_lines_are_kept(line):
    text = f"Step 1. a.\n{line}\nStep 2. b."
    assert strip_self_evaluation(text) == text


def test_the_first_heading_cuts_everything_after_it():
    two = "Proof part one.\n## Final Evaluation\nlooks fine\n## Proof, continued\nmore\n## Self Evaluation\nverdict"
    assert strip_self_evaluation(two) == "Proof part one."
    assert strip_self_evaluation("  \nno heading here \n") == "no heading here"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="answer mode"):
        extract_answer("x", mode="last_line")
