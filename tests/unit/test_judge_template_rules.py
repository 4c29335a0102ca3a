"""The built-in judge templates carry every rule of the paper's grading prompts, in our
own words. The rule lists below are written from the released prompts, independently
of the templates' front-matter checklists: dropping a rule from a template's text or
from its checklist fails here."""
import pytest

from qed_lightning.judging.templates import load_template

# training/prompts/evaluator_prompts/v1.md (the RL reward). The released ProofBench
# prompt (eval/configs/prompts/proofbench_proofbench.txt) is the same rules with a
# <points> verdict.
V1_RULES = {
    "expert_grader",
    "analyse_carefully",
    "proof_may_be_flawed",  # written by a language model; errors, omissions, unclear steps
    "scheme_contents",  # checkpoints, zero-credit items, deductions
    "scheme_must_be_followed",
    "precedence_order",  # validity > problem constraints > scheme > reference solution
    "validity_first",
    "problem_constraints",  # a unique required final value, forbidden tools
    "scheme_is_advisory",  # other orders and techniques
    "reference_sufficient_not_exclusive",
    "map_alternative_steps",  # same logical role
    "zero_credit_only_if_occurs",
    "omitted_step_penalised",
    "larger_of_exclusive_items_only",
    "wrong_unique_answer_partial_only",
    "credit_only_if_justified",
    "conservative_partial_credit",
    "identify_errors",
    "detailed_assessment",
    "score_breakdown",  # checkpoints and points, deductions and why, how they add up
    "errors_list",  # empty at 7
    "xml_only",
    "score_integer_0_7",
}
# eval/configs/prompts/proofbench.txt (IMO-ProofBench)
IMO_RULES = {
    "high_standard",
    "seven_points",
    "seven_despite_discarded_work",
    "six_points",
    "six_excludes_major_gaps",
    "one_point_guidelines_progress",
    "one_point_exclusions",  # initial observations, reformulations, results not in the guidelines
    "zero_points",
    "zero_for_unrigorous_progress",
    "reference_correct_one_approach",
    "guidelines_take_precedence",  # at the 6-point level as well as the 1-point one
    "analyse_references",
    "verify_every_step",
    "beware_pretended_correctness",
    "assess_progress",
    "score_from_guidelines_and_rubric",
    "detailed_justification",
    "points_tag_once",
    "four_options",
}
EXPECTED = {"rl_strict": V1_RULES, "proofbench": V1_RULES, "imo_proofbench": IMO_RULES}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_carries_every_rule_of_the_paper_prompt(name):
    template = load_template(name)  # also refuses a checklisted line missing from the text
    assert set(template.rules) == EXPECTED[name]
    lines = list(template.rules.values())
    # each rule names its own, non-trivial piece of the text, and the text still has it
    assert len(set(lines)) == len(lines)
    assert [line for line in lines if len(line) < 20 or line not in template.body] == []


def test_proofbench_prompt_is_the_rl_rules_with_a_points_verdict():
    rl, pb = load_template("rl_strict"), load_template("proofbench")
    assert rl.rules == pb.rules
    differ = [(a, b) for a, b in zip(rl.body.splitlines(), pb.body.splitlines()) if a != b]
    assert len(rl.body.splitlines()) == len(pb.body.splitlines()) and len(differ) == 1
    assert "<score>N</score>" in differ[0][0] and "<points>N out of 7</points>" in differ[0][1]
    assert (rl.verdict.name, pb.verdict.name) == ("score_tag", "points_tag")


@pytest.mark.parametrize("name", ["rl_strict", "proofbench"])
def test_partial_credit_is_not_stricter_than_the_papers(name):
    body = load_template(name).body.lower()
    for stricter in ("choose the lower", "earns nothing", "when unsure"):
        assert stricter not in body


@pytest.mark.parametrize("name", ["rl_strict", "proofbench", "imo_proofbench", "answer_match"])
def test_prompt_asks_for_the_verdict_where_the_parser_reads_it(name):
    template = load_template(name)
    assert template.verdict.at == "last"
    answer_section = template.body.split("## Your answer")[1]
    assert "nothing after it" in answer_section
    last_tag_line = [ln for ln in answer_section.splitlines() if template.verdict.tag.split("N")[0] in ln][-1]
    assert template.verdict.pattern.search(last_tag_line.replace("N", "7"))
