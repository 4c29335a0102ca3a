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
    text = "Proof. Obvious.\n\n**Self-Evaluation**\nScore: 7/7"
    got = extract_answer(text, mode="whole")
    assert got.text == "Proof. Obvious." and got.skip is None
    assert extract_answer(text, mode="whole", strip_self_eval=False).text == text


@pytest.mark.parametrize(
    "heading", ["## Self Evaluation", "### Self-evaluation", "**Self Evaluation**", "Self-Evaluation:", "SELF EVALUATION"]
)
def test_self_evaluation_headings_start_the_removed_section(heading):
    text = f"Step 1. a.\nStep 2. b.\n{heading}\nI think it deserves <score>7</score>."
    assert strip_self_evaluation(text) == "Step 1. a.\nStep 2. b.\n"


def test_inline_mention_is_not_a_section_and_last_heading_wins():
    inline = "We avoid self evaluation of the lemma by proving it directly. QED"
    assert strip_self_evaluation(inline) == inline
    two = "## Self Evaluation of Lemma 1\nproof part\n## Self Evaluation\nverdict"
    assert strip_self_evaluation(two) == "## Self Evaluation of Lemma 1\nproof part\n"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="answer mode"):
        extract_answer("x", mode="last_line")
