"""Reasoning-cache cycles with fake generators: text cuts, prompts, summary updates,
batching, faults and counters."""
import pytest

from qed_lightning.contracts import Completion, Problem
from qed_lightning.reasoning_cache import (
    FIRST_REASONING_PROMPT, REASONING_PROMPT, RCPrompts, TurnOutput, chain_of_thought, cut_summary, final_answer,
    reasoning_prompt, run_cycles, summary_prompt, summary_text, update_summary,
)


@pytest.mark.parametrize("text, expected", [
    ("<think>abc</think>proof", "abc"),
    ("abc</think>proof", "abc"),  # the chat template opened <think> in the prompt
    ("  <think>\nabc\n</think>\nproof", "abc"),
    ("<think>still going when the budget ran out", "still going when the budget ran out"),
    ("no thinking tags at all", "no thinking tags at all"),
    ("<think>a</think> draft </think> final", "a"),  # thinking ends at the first close
    ("<think></think>answer", ""),
    ("<think>\n\n</think>", ""),
    ("", ""),
    ("x <think> y</think>z", "x <think> y"),  # only a leading <think> is dropped
])
def test_chain_of_thought(text, expected):
    assert chain_of_thought(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("I proved the lemma.", "I proved the lemma."),
    ("<think>plan</think>\nI proved the lemma.\n", "I proved the lemma."),
    ("<think>never finished", ""),
    ("   \n", ""),
])
def test_summary_text(text, expected):
    assert summary_text(text) == expected


def test_reasoning_prompt_first_form_without_summary():
    first = FIRST_REASONING_PROMPT.replace("{problem}", "Show 1 < 2.")
    assert reasoning_prompt("Show 1 < 2.", "") == first
    assert reasoning_prompt("Show 1 < 2.", None) == first
    assert reasoning_prompt("Show 1 < 2.", "  \n") == first
    assert "summary" not in first.lower()
    with_summary = reasoning_prompt("Show 1 < 2.", "I used induction.")
    assert with_summary == REASONING_PROMPT.replace("{problem}", "Show 1 < 2.").replace("{summary}", "I used induction.")


def test_braces_in_values_stay_literal():
    problem = r"Let $f(\{x\}) = x^{2}$; prove {summary} and {reasoning} hold."
    summary = "I wrote {problem} and $\\frac{a}{b}$."
    got = reasoning_prompt(problem, summary, template="[{problem}|{summary}]")
    assert got == f"[{problem}|{summary}]"
    got = summary_prompt(problem, summary, "{summary}{x}", template="{problem}#{summary}#{reasoning}")
    assert got == f"{problem}#{summary}#{{summary}}{{x}}"


def test_templates_are_overridable_and_checked():
    assert reasoning_prompt("P", "", first_template="<{problem}>") == "<P>"
    assert summary_prompt("P", "", "R", first_template="{problem}/{reasoning}") == "P/R"
    assert summary_prompt("P", "S", "R", template="{problem}/{summary}/{reasoning}") == "P/S/R"
    with pytest.raises(ValueError, match=r"lacks \['\{summary\}'\]"):
        reasoning_prompt("P", "S", template="only {problem}")
    with pytest.raises(ValueError, match="lacks"):
        RCPrompts(first_summary="{problem} without the reasoning")


def test_summary_update_replaces_and_never_appends():
    assert update_summary("old summary", TurnOutput("new summary", 3)) == ("new summary", False, False)
    assert update_summary("old", TurnOutput("<think>x</think> new ", 5)) == ("new", False, False)
    assert update_summary("old", TurnOutput("  ", 1)) == ("old", True, False)
    assert update_summary("old", None) == ("old", True, False)
    assert update_summary("old", TurnOutput("abcdefgh", 4), max_chars=5) == ("abcde", False, True)
    assert update_summary("old", TurnOutput("abc", 4), max_chars=0) == ("old", True, True)  # cut to nothing


def test_cut_summary_by_chars_and_tokens():
    words = lambda s: len(s.split())  # noqa: E731
    assert cut_summary("one two three four five", max_tokens=3, count_tokens=words) == ("one two three", True)
    assert cut_summary("one two", max_tokens=3, count_tokens=words) == ("one two", False)
    assert cut_summary("abc def", max_chars=4) == ("abc", True)
    assert cut_summary("abc", max_chars=3) == ("abc", False)
    with pytest.raises(ValueError, match="count_tokens"):
        cut_summary("abc", max_tokens=1)


class FakeGen:
    """Records each batched call; item i of call c answers ``make(c, i, message)``."""

    def __init__(self, make):
        self.make, self.calls = make, []

    def __call__(self, messages):
        self.calls.append(list(messages))
        c = len(self.calls) - 1
        return [self.make(c, i, m) for i, m in enumerate(messages)]


def policy(c, i, m):
    return TurnOutput(f"<think>idea c{c} i{i}</think>answer c{c} i{i}", 100 + c)


def summarizer(c, i, m):
    return TurnOutput(f"summary c{c} i{i}", 10)


PROBLEMS = [Problem("a", "Problem A."), Problem("b", "Problem B.")]


def test_three_cycles_give_four_states_with_one_batched_call_per_turn():
    reason, summarize = FakeGen(policy), FakeGen(summarizer)
    trajs, stats = run_cycles(PROBLEMS, reason, summarize, cycles=3)
    assert [len(c) for c in reason.calls] == [2, 2, 2] and [len(c) for c in summarize.calls] == [2, 2, 2]
    a = trajs[0]
    assert [s.turn for s in a.states] == [0, 1, 2, 3]
    assert [s.summary for s in a.states] == ["", "summary c0 i0", "summary c1 i0", "summary c2 i0"]
    assert [s.problem.id for s in trajs[1].states] == ["b"] * 4
    assert reason.calls[0] == [reasoning_prompt("Problem A.", ""), reasoning_prompt("Problem B.", "")]
    assert reason.calls[2][1] == reasoning_prompt("Problem B.", "summary c1 i1")
    # the summarizer sees the earlier summary and the chain of thought, never the answer
    assert summarize.calls[1][0] == summary_prompt("Problem A.", "summary c0 i0", "idea c1 i0")
    assert summarize.calls[0][0] == summary_prompt("Problem A.", "", "idea c0 i0")
    assert a.summaries == ["summary c0 i0", "summary c1 i0", "summary c2 i0"]
    assert a.turn_tokens == [110, 111, 112] and a.total_tokens == 333
    assert stats.metrics() == {
        "rc/problems": 2.0, "rc/reasoning_turns": 6.0, "rc/summary_turns": 6.0, "rc/summaries_cut": 0.0,
        "rc/summarizer_failures": 0.0, "rc/skipped_problems": 0.0, "rc/truncated_reasoning_turns": 0.0,
        "rc/truncated_summaries": 0.0, "rc/mean_summary_chars": 13.0, "rc/mean_summary_tokens": 10.0,
    }


def test_test_time_rc_reasons_from_the_last_state_and_answers_with_it():
    reason, summarize = FakeGen(policy), FakeGen(summarizer)
    trajs, stats = run_cycles(PROBLEMS, reason, summarize, cycles=2, reason_final=True)
    assert len(reason.calls) == 3 and len(summarize.calls) == 2
    assert reason.calls[2][0] == reasoning_prompt("Problem A.", "summary c1 i0")
    assert final_answer(trajs[0]).text == "answer c2 i0"
    assert trajs[1].turn_tokens == [110, 111, 102] and trajs[1].total_tokens == 323
    assert stats.reasoning_turns == 6 and stats.summary_turns == 4


def test_zero_cycles():
    reason, summarize = FakeGen(policy), FakeGen(summarizer)
    trajs, _ = run_cycles(PROBLEMS, reason, summarize, cycles=0)
    assert reason.calls == [] and [s.summary for s in trajs[0].states] == [""]
    trajs, _ = run_cycles(PROBLEMS, reason, summarize, cycles=0, reason_final=True)
    assert len(reason.calls) == 1 and final_answer(trajs[1]).text == "answer c0 i1"


def test_summarizer_exception_keeps_previous_summaries_and_counts_each_item():
    def flaky(c, i, m):
        if c == 1:
            raise RuntimeError("summarizer down")
        return summarizer(c, i, m)

    trajs, stats = run_cycles(PROBLEMS, FakeGen(policy), FakeGen(flaky), cycles=3)
    a = trajs[0]
    assert [s.summary for s in a.states] == ["", "summary c0 i0", "summary c0 i0", "summary c2 i0"]
    assert a.summary_failed == [False, True, False] and a.summary_outputs[1] is None
    assert a.turn_tokens == [110, 101, 112]
    assert stats.summarizer_failures == 2 and stats.summary_turns == 6


def test_empty_summary_item_keeps_previous_and_is_counted():
    def empty_for_b(c, i, m):
        return TurnOutput("", 0) if (c, i) == (0, 1) else summarizer(c, i, m)

    reason = FakeGen(policy)
    trajs, stats = run_cycles(PROBLEMS, reason, FakeGen(empty_for_b), cycles=2)
    b = trajs[1]
    assert [s.summary for s in b.states] == ["", "", "summary c1 i1"]
    assert b.summary_failed == [True, False]
    assert reason.calls[1][1] == reasoning_prompt("Problem B.", "")  # still the first form
    assert stats.summarizer_failures == 1
    assert stats.mean_summary_chars == 13.0 and stats.mean_summary_tokens == 10.0  # 3 accepted summaries


def test_over_long_prompt_skips_the_problem_from_then_on():
    def long_for_b(c, i, m):
        return TurnOutput("word " * 500, 600) if i == 1 else summarizer(c, i, m)

    reason, summarize = FakeGen(policy), FakeGen(long_for_b)
    words = lambda s: len(s.split())  # noqa: E731
    trajs, stats = run_cycles(PROBLEMS, reason, summarize, cycles=3, count_tokens=words, max_prompt_tokens=200)
    b = trajs[1]
    assert b.skipped_at == 1
    assert [s.summary for s in b.states] == ["", None, None, None]
    assert len(b.reasoning) == 1 and len(b.summaries) == 1
    assert [len(c) for c in reason.calls] == [2, 1, 1] and [len(c) for c in summarize.calls] == [2, 1, 1]
    assert stats.skipped_problems == 1 and b.total_tokens == 700
    # a problem too long on its own never reaches the policy
    reason = FakeGen(policy)
    long_problem = Problem("c", "x " * 300)
    trajs, stats = run_cycles([long_problem, PROBLEMS[0]], reason, FakeGen(summarizer), cycles=1,
                              count_tokens=words, max_prompt_tokens=200)
    assert trajs[0].skipped_at == 0 and trajs[0].reasoning == [] and stats.skipped_problems == 1
    assert [len(c) for c in reason.calls] == [1]
    assert final_answer(trajs[0]).skip == "no_attempt"


def test_cut_summaries_are_counted_and_kept_cut():
    trajs, stats = run_cycles(PROBLEMS, FakeGen(policy), FakeGen(summarizer), cycles=3, max_summary_chars=12)
    assert trajs[0].summaries == ["summary c0 i", "summary c1 i", "summary c2 i"]
    assert stats.summaries_cut == 6 and stats.mean_summary_chars == 12.0
    trajs, stats = run_cycles(PROBLEMS, FakeGen(policy), FakeGen(summarizer), cycles=1,
                              count_tokens=lambda s: len(s.split()), max_summary_tokens=1)
    assert trajs[1].summaries == ["summary"] and stats.summaries_cut == 2


def test_truncated_turns_are_counted_and_summarised_whole():
    def cut_off(c, i, m):
        return TurnOutput("<think>cut off mid-thought", 49152, True) if (c, i) == (0, 0) else policy(c, i, m)

    def long_summary(c, i, m):
        return TurnOutput(f"summary c{c} i{i}", 2048, truncated=(i == 1))

    summarize = FakeGen(long_summary)
    _, stats = run_cycles(PROBLEMS, FakeGen(cut_off), summarize, cycles=2)
    assert summarize.calls[0][0] == summary_prompt("Problem A.", "", "cut off mid-thought")
    assert stats.truncated_reasoning_turns == 1 and stats.truncated_summaries == 2


def test_contract_violations_raise():
    with pytest.raises(ValueError, match="reason returned 1 outputs for 2 messages"):
        run_cycles(PROBLEMS, lambda ms: [TurnOutput("x", 1)], FakeGen(summarizer), cycles=1)
    with pytest.raises(ValueError, match="need count_tokens"):
        run_cycles(PROBLEMS, FakeGen(policy), FakeGen(summarizer), max_prompt_tokens=10)
    with pytest.raises(ValueError, match="cycles"):
        run_cycles(PROBLEMS, FakeGen(policy), FakeGen(summarizer), cycles=-1)


def test_turn_output_from_completion():
    c = Completion([1], [5, 6, 7], [-0.1, -0.2, -0.3], "length", "<think>abc", 4)
    assert TurnOutput.from_completion(c) == TurnOutput("<think>abc", 3, True)
