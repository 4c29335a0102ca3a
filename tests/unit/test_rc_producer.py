"""RC training's producer, pool and callback over a scripted engine (the real engine
runs in tests/integration/test_rc_fit.py): states are built with the policy, a frozen
summarizer or the policy summarizes, groups are sampled per state and graded against
the original problem, and the pool refreshes on its cadence."""
import json
from types import SimpleNamespace

import pytest

from qed_lightning.callbacks.reasoning_cache import ReasoningCacheCallback
from qed_lightning.contracts import Completion, Problem, SamplingSettings, Verdict
from qed_lightning.judging.client import JudgeReply
from qed_lightning.reasoning_cache.pool import StatePool
from qed_lightning.reasoning_cache.producer import ReasoningCacheProducer, ReasoningCacheSettings
from qed_lightning.rollouts import RolloutDataModule
from qed_lightning.rollouts.producer import RolloutProducer

PROBLEMS = [Problem(f"p{i}", f"Problem number {i}.", rubric=f"rubric {i}") for i in range(3)]


class ScriptedEngine:
    """Answers every prompt with a think block naming the request, so tests can see
    which prompt produced which text; records every call."""

    max_model_len = 4096
    weight_version = 0

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def generate(self, prompts, sampling, sample_seeds=None, regex=None):
        self.calls.append(([self.tokenizer.decode(p) for p in prompts], sampling))
        out = []
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(sampling.n):
                text = f"<think>idea {len(self.calls)}.{i}.{j}</think>proof {'e' * (j + 1)}"
                ids = self.tokenizer(text, add_special_tokens=False).input_ids[: sampling.max_tokens]
                group.append(Completion(list(prompt), ids, [-0.5] * len(ids), "stop", text, self.weight_version))
            out.append(group)
        return out


class RecordingJudge:
    def __init__(self):
        self.items = []

    def grade(self, items):
        self.items.extend(items)
        return [Verdict(min(7, item.proof.count("e"))) for item in items]


class Summarizer:
    def __init__(self, fail=False):
        self.prompts, self.fail = [], fail

    def complete(self, requests):
        self.prompts.extend(r.prompt for r in requests)
        if self.fail:
            return [JudgeReply(error="http: 503") for _ in requests]
        return [JudgeReply(f"I tried idea number {len(self.prompts)}.", finish_reason="stop") for _ in requests]

    def fingerprint(self):
        return {}


def producer(tokenizer, summarizer=None, **settings):
    engine, judge = ScriptedEngine(tokenizer), RecordingJudge()
    rollouts = RolloutProducer(engine, judge, tokenizer, SamplingSettings(temperature=1.0, max_tokens=64, n=2))
    rc = ReasoningCacheProducer(rollouts, ReasoningCacheSettings(**{"cycles": 2, "states_per_problem": 2, **settings}),
                                summarizer, seed=0)
    return rc, engine, judge


def test_groups_are_sampled_per_state_and_graded_against_the_original_problem(tiny_qwen3_tokenizer):
    summarizer = Summarizer()
    rc, engine, judge = producer(tiny_qwen3_tokenizer, summarizer)
    batch = rc.produce(PROBLEMS, step=0, expected_version=0)
    # 2 cycles: reason, summarize, reason, summarize -> 3 states; 2 kept per problem; n = 2 each
    assert len(engine.calls) == 3  # reasoning turn 1, turn 2, then the rollouts (summaries go to the client)
    assert len(summarizer.prompts) == 6
    assert len(rc.last_states) == 6 and batch.num_samples == 12
    assert [p.id for p in batch.problems] == [f"{s.problem.id}#rc{s.turn}" for s in rc.last_states]
    rollout_prompts, sampling = engine.calls[-1]
    assert sampling.n == 2
    for state, prompt in zip(rc.last_states, rollout_prompts):
        assert state.problem.statement in prompt
        if state.turn > 0:  # the summary in force at that state is in the prompt
            assert state.summary.startswith("I tried idea number") and state.summary in prompt
    # every graded item (cycle turns for metrics, then rollouts) names the original problem and rubric, the
    # statement wrapped in the RL proof prompt as the paper's RC grader gets it (not the raw statement)
    wrapped = {(f"Generate a rigorous proof to the following question:\n\n{p.statement}", p.rubric) for p in PROBLEMS}
    assert {(i.problem.statement, i.problem.rubric) for i in judge.items} == wrapped
    assert len(judge.items) == 6 + 12

    m = rc.last_metrics
    assert m["rc/reasoning_turns"] == 6 and m["rc/summary_turns"] == 6 and m["rc/summarizer_failures"] == 0
    assert m["rc/cycle_turn1_reward"] == pytest.approx(2 / 7)  # "idea" + "e" and "rc/improvement_turn2" in m
    assert sum(m[f"rc/turn{k}_groups"] for k in (1, 2, 3)) == 6
    # the summarizer saw the chain of thought of the turn before, not its answer
    assert "idea 1." in summarizer.prompts[0] and "proof e" not in summarizer.prompts[0]


def test_grader_problem_template_is_a_setting(tiny_qwen3_tokenizer):
    rc, _, judge = producer(tiny_qwen3_tokenizer, Summarizer(), grader_problem_template="{problem}")
    rc.produce(PROBLEMS, step=0, expected_version=0)
    assert {i.problem.statement for i in judge.items} == {p.statement for p in PROBLEMS}
    with pytest.raises(ValueError, match="grader_problem_template"):
        ReasoningCacheSettings(grader_problem_template="no placeholder")


def test_policy_summarizes_itself_with_the_summary_sampling(tiny_qwen3_tokenizer):
    rc, engine, _ = producer(tiny_qwen3_tokenizer, None, summary_max_tokens=32, summary_top_k=20)
    rc.produce(PROBLEMS[:1], step=0)
    samplings = [s for _, s in engine.calls]
    assert [(s.temperature, s.top_p, s.top_k, s.max_tokens) for s in samplings[1::2][:2]] == [(0.7, 0.8, 20, 32)] * 2
    assert len(engine.calls) == 5  # reason, summarize, reason, summarize, rollouts


def test_a_failing_summarizer_keeps_turn_zero_servable_and_is_counted(tiny_qwen3_tokenizer):
    rc, _, _ = producer(tiny_qwen3_tokenizer, Summarizer(fail=True))
    batch = rc.produce(PROBLEMS[:2], step=0)
    assert rc.last_metrics["rc/summarizer_failures"] == 4
    # later states would repeat turn 0 with no summary: only turn 0 is served
    assert [s.turn for s in rc.last_states] == [0, 0] and batch.num_samples == 4


def test_pool_serves_built_states_and_round_trips(tiny_qwen3_tokenizer):
    rc, engine, _ = producer(tiny_qwen3_tokenizer, Summarizer())
    rc.pool = StatePool()
    rc.refresh_pool(PROBLEMS, step=0)
    calls = len(engine.calls)
    rc.produce(PROBLEMS[:2], step=1)
    assert len(engine.calls) == calls + 1  # only the rollouts: both problems served from the pool
    assert rc.last_metrics["rc/pool_served_problems"] == 2 and rc.last_metrics["rc/pool_refreshed"] == 1
    copy = StatePool()
    copy.load_state_dict(json.loads(json.dumps(rc.pool.state_dict())))
    assert copy.get("p1") == rc.pool.get("p1") and copy.built_at("p1") == 0


def test_callback_refreshes_on_its_cadence(tiny_qwen3_tokenizer, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "problem": p.statement, "rubrics": p.rubric}) + "\n"
                            for p in PROBLEMS))
    dm = RolloutDataModule(str(path), id_column="id", prompts_per_step=1, seed=0)
    dm.setup("fit")
    rc, _, _ = producer(tiny_qwen3_tokenizer, Summarizer())
    callback = ReasoningCacheCallback(refresh_every_n_steps=2)
    module = SimpleNamespace(producer=rc)
    callback.on_fit_start(None, module)
    from qed_lightning.rollouts.datamodule import problems_for_step

    for step in range(5):
        trainer = SimpleNamespace(global_step=step, datamodule=dm)
        batch = problems_for_step(dm.problems, step, 1, 0)
        callback.on_train_batch_start(trainer, module, batch, step)
        rc.produce(batch, step)
        assert rc.last_metrics["rc/pool_served_problems"] == 1  # always served: the refresh covered it
    assert callback.refreshed_at == [0, 2, 4]
    window = {p.id for s in (4, 5) for p in problems_for_step(dm.problems, s, 1, 0)}  # the last refresh's k steps
    assert {p.id for p in PROBLEMS if callback.pool.get(p.id) is not None} == window
    assert {callback.pool.built_at(pid) for pid in window} == {4}
    with pytest.raises(ValueError, match="reasoning_cache"):
        ReasoningCacheCallback().on_fit_start(None, SimpleNamespace(producer=object()))
