"""Which reasoning-cache states a step serves: deterministic under (seed, step, problem),
without replacement, never a state without a summary."""
import pytest

from qed_lightning.contracts import Problem
from qed_lightning.reasoning_cache import State, TurnOutput, run_cycles, sample_states, servable


def states(pid, summaries):
    problem = Problem(pid, f"Problem {pid}.")
    return [State(problem, turn, s) for turn, s in enumerate(summaries)]


FULL = ["", "s1", "s2", "s3"]


def turns(picked):
    return [(s.problem.id, s.turn) for s in picked]


def test_two_of_four_deterministic_per_seed_and_step():
    groups = [states("p1", FULL), states("p2", FULL)]
    first = sample_states(groups, 2, seed=0, step=0)
    assert turns(first) == [("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]
    assert turns(sample_states(groups, 2, seed=0, step=0)) == turns(first)
    assert turns(sample_states(groups, 2, seed=1, step=0)) == [("p1", 1), ("p1", 3), ("p2", 2), ("p2", 3)]
    assert turns(sample_states(groups, 2, seed=0, step=2)) == [("p1", 1), ("p1", 2), ("p2", 0), ("p2", 3)]


def test_pick_does_not_depend_on_the_batch_around_it():
    alone = sample_states([states("p2", FULL)], 2, seed=0, step=0)
    reordered = sample_states([states("p2", FULL), states("p1", FULL)], 2, seed=0, step=0)
    assert turns(alone) == turns(reordered[:2]) == [("p2", 0), ("p2", 1)]
    shuffled = sample_states([list(reversed(states("p2", FULL)))], 2, seed=0, step=0)
    assert turns(shuffled) == turns(alone)


def test_every_pair_is_reachable_without_replacement():
    pairs = set()
    for seed in range(50):
        picked = sample_states([states("p1", FULL)], 2, seed=seed, step=3)
        assert len({s.turn for s in picked}) == 2
        pairs.add(tuple(s.turn for s in picked))
    assert pairs == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}


def test_all_servable_states_when_asking_for_as_many_or_more():
    assert turns(sample_states([states("p1", FULL)], 4, seed=0, step=0)) == [("p1", t) for t in range(4)]
    assert turns(sample_states([states("p1", ["", "s1", None, None])], 2, seed=0, step=0)) == [("p1", 0), ("p1", 1)]
    assert sample_states([states("p1", [None, None])], 2, seed=0, step=0) == []


def test_states_without_a_summary_are_never_served():
    assert servable(State(Problem("p", "P."), 0, "")) is True
    assert servable(State(Problem("p", "P."), 0, None)) is False
    assert servable(State(Problem("p", "P."), 2, None)) is False
    assert servable(State(Problem("p", "P."), 1, "  ")) is False
    assert servable(State(Problem("p", "P."), 1, "s1")) is True
    group = states("p1", ["", "", "s2", None])  # turn 1: first summary failed; turn 3: never reached
    for seed in range(20):
        assert [s.turn for s in sample_states([group], 2, seed=seed, step=0)] == [0, 2]
    with pytest.raises(ValueError, match="per_problem"):
        sample_states([group], 0, seed=0, step=0)


def test_samples_run_cycles_output():
    def policy(ms):
        return [TurnOutput("<think>idea</think>proof", 5) for _ in ms]

    def summarize(ms):
        return [TurnOutput(f"summary {k}", 2) for k, _ in enumerate(ms)]

    trajs, _ = run_cycles([Problem("p1", "P1."), Problem("p2", "P2.")], policy, summarize, cycles=3)
    picked = sample_states([t.states for t in trajs], 2, seed=0, step=0)
    assert turns(picked) == [("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]
    assert [s.summary for s in picked] == ["", "summary 0", "", "summary 1"]
