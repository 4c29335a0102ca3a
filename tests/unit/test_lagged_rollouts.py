"""Lagged rollouts (``max_lag`` > 0) over a scripted engine whose weight version the
test advances as a trainer's push would: the schedule (what is generated when, with
which version), the lag metrics from the stamps, the last steps, stale stamps, the
checkpoint round trip, and the settings a lagged run refuses or warns about; with
``background`` generation (served engines) the same schedule, generation overlapping
training, and no push while a generation runs."""
import threading
import warnings

import pytest
import torch

from qed_lightning.contracts import Completion, Problem, SamplingSettings, Verdict
from qed_lightning.engines.served_worker import UNKNOWN_VERSION
from qed_lightning.judging import RuleJudge
from qed_lightning.losses.policy import get_policy_loss
from qed_lightning.modules.lag_settings import LagWarning, check_lag_settings
from qed_lightning.modules.lagged_rollouts import LaggedRollouts
from qed_lightning.modules.rl_metrics import importance_metrics
from qed_lightning.rollouts.batch import build_rollout_batch
from qed_lightning.rollouts.datamodule import problems_for_step
from qed_lightning.rollouts.producer import RolloutProducer, StaleRolloutError

PROBLEMS = [Problem(f"p{i}", f"Problem number {i}.") for i in range(5)]
SAMPLING = SamplingSettings(temperature=1.0, max_tokens=16, n=2)


def problems_of(step):
    return problems_for_step(PROBLEMS, step, 2, seed=3)


class Engine:
    """Stamps what it holds (``weight_version``, set by the test as a push would); the
    text depends on the seed and the version; ``stale``: problem statements whose
    groups come back with ``UNKNOWN_VERSION`` (a server that missed a push)."""

    max_model_len = 4096

    def __init__(self, tokenizer, version=0, stale=()):
        self.tokenizer, self.weight_version, self.stale = tokenizer, version, set(stale)
        self.calls = []  # (version, prompts) per call
        self.started = [threading.Event() for _ in range(16)]

    def generate(self, prompts, sampling, sample_seeds=None, regex=None):
        self.started[len(self.calls)].set()
        self.calls.append((self.weight_version, len(prompts)))
        out = []
        for prompt, seeds in zip(prompts, sample_seeds):
            stale = any(s in self.tokenizer.decode(prompt) for s in self.stale)
            group = []
            for seed in seeds:
                text = "e" * ((seed + self.weight_version) % 7) + "x"
                ids = self.tokenizer(text, add_special_tokens=False).input_ids
                group.append(Completion(list(prompt), ids, [-0.25] * len(ids), "stop", text,
                                        UNKNOWN_VERSION if stale else self.weight_version))
            out.append(group)
        return out


class Judge:
    def __init__(self, wait_for=None):
        self.calls, self.wait_for, self.overlapped = 0, wait_for, []

    def grade(self, items):
        k, self.calls = self.calls, self.calls + 1
        if self.wait_for is not None:  # a deadlock guard: returns False only if nothing overlaps
            self.overlapped.append(self.wait_for.started[k + 1].wait(timeout=20))
        return [Verdict(min(7, item.proof.count("e"))) for item in items]


def scheduler(tokenizer, max_lag, version=0, stale=(), wait=False, background=False, engine_class=Engine):
    engine = engine_class(tokenizer, version, stale)
    judge = Judge(engine if wait else None)
    producer = RolloutProducer(engine, judge, tokenizer, SAMPLING, seed=1)
    return LaggedRollouts(producer, max_lag, background=background), engine, judge


def run(lagged, engine, steps, last_step, start=0, train=None):
    """A trainer's loop: take batch t, train (``train(t)``), wait for the engine to
    drain, then push version t + 1."""
    out = []
    for t in range(start, steps):
        batch, metrics, from_saved = lagged.take(t, problems_of(t), problems_of, last_step)
        out.append((batch, metrics, from_saved, lagged.in_flight))
        if train is not None:
            train(t)
        lagged.drain()
        engine.weight_version = t + 1
    return out


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("max_lag", [1, 2])
def test_every_sample_is_trained_max_lag_versions_after_it_was_generated(tiny_qwen3_tokenizer, max_lag, background):
    lagged, engine, judge = scheduler(tiny_qwen3_tokenizer, max_lag, background=background)
    steps = run(lagged, engine, 5, last_step=4)
    for t, (batch, metrics, from_saved, in_flight) in enumerate(steps):
        want = max(t - max_lag, 0)  # the first batches come from the warm-up with version 0
        assert batch.versions.tolist() == [want] * 4
        lag = t - want
        assert (metrics["rollout/lag_min"], metrics["rollout/lag_mean"], metrics["rollout/lag_max"]) == (lag, lag, lag)
        assert [p.id for p in batch.problems] == [p.id for p in problems_of(t)]
        assert in_flight == list(range(t + 1, min(t + max_lag, 4) + 1))  # nothing past the last step
        assert not from_saved and metrics["rollout/too_old_samples"] == 0
    # one engine call per batch, each with the version the trainer held: nothing generated twice or past the end
    assert [v for v, _ in engine.calls] == [0] * (max_lag + 1) + list(range(1, 5 - max_lag))
    assert judge.calls == 5


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("max_lag,max_steps", [(1, 1), (2, 1), (2, 2)])
def test_a_run_not_longer_than_the_lag_generates_only_its_own_steps(tiny_qwen3_tokenizer, max_lag, max_steps,
                                                                     background):
    lagged, engine, judge = scheduler(tiny_qwen3_tokenizer, max_lag, background=background)
    steps = run(lagged, engine, max_steps, last_step=max_steps - 1)
    assert len(steps) == max_steps and steps[-1][3] == [] and len(engine.calls) == max_steps == judge.calls
    lagged.close()


class GatedEngine(Engine):
    """Generation of batch c (one engine call per batch) for c > k waits until the
    trainer trains step c - k, the step during which it should run; every weight change
    (a push) notes whether a generation was running."""

    max_lag = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.training = [threading.Event() for _ in range(16)]
        self.waited, self.running, self.pushed_while_running = [], 0, []
        self._version = self.weight_version

    @property
    def weight_version(self):
        return self._version

    @weight_version.setter
    def weight_version(self, version):
        if hasattr(self, "pushed_while_running"):
            self.pushed_while_running.append(self.running > 0)
        self._version = version

    def generate(self, prompts, sampling, sample_seeds=None, regex=None):
        c, self.running = len(self.calls), self.running + 1
        try:
            if c > self.max_lag:  # a deadlock guard: False only if generation did not overlap training
                self.waited.append(self.training[c - self.max_lag].wait(timeout=20))
            return super().generate(prompts, sampling, sample_seeds, regex)
        finally:
            self.running -= 1


@pytest.mark.parametrize("max_lag", [1, 2])
def test_background_generation_overlaps_training_and_no_push_lands_while_it_runs(tiny_qwen3_tokenizer, max_lag):
    GatedEngine.max_lag = max_lag
    lagged, engine, judge = scheduler(tiny_qwen3_tokenizer, max_lag, background=True, engine_class=GatedEngine)

    def train(t):  # step t trains while batch t + k generates (started by take(t)), if it exists
        engine.training[t].set()
        if t + max_lag <= 5:
            assert engine.started[t + max_lag].wait(timeout=20)

    steps = run(lagged, engine, 6, last_step=5, train=train)
    assert engine.waited == [True] * (5 - max_lag)  # batches k+1 .. 5 each generated during a training step
    assert engine.pushed_while_running == [False] * 6
    assert [v for v, _ in engine.calls] == [0] * (max_lag + 1) + list(range(1, 6 - max_lag))
    assert [b.versions.tolist() for b, *_ in steps] == [[max(t - max_lag, 0)] * 4 for t in range(6)]
    assert all(m["rollout/wait_s"] >= 0 for _, m, *_ in steps)
    lagged.close()


def test_a_failed_background_generation_fails_the_next_step(tiny_qwen3_tokenizer):
    lagged, engine, _ = scheduler(tiny_qwen3_tokenizer, 2, background=True)
    lagged.take(0, problems_of(0), problems_of, 5)  # batches 1 and 2 launched
    lagged.drain()
    engine.weight_version = 1

    def broken(*args, **kwargs):
        raise ConnectionError("server went away")

    engine.generate = broken
    lagged.take(1, problems_of(1), problems_of, 5)  # launches batch 3, which fails in the background
    lagged.drain()
    with pytest.raises(RuntimeError, match="generating step 3's batch in the background failed: server went away"):
        lagged.take(2, problems_of(2), problems_of, 5)
    lagged.close()


def test_batch_t_is_graded_while_batch_t_plus_1_generates(tiny_qwen3_tokenizer):
    lagged, engine, judge = scheduler(tiny_qwen3_tokenizer, 1, wait=True)
    run(lagged, engine, 3, last_step=3)  # batch 3 is generated at step 2: each grading has a next generation
    assert judge.overlapped == [True, True, True]


def test_stale_stamps_are_refused_by_group_and_counted(tiny_qwen3_tokenizer):
    lagged, engine, _ = scheduler(tiny_qwen3_tokenizer, 1, stale=["Problem number 4."])
    batch, metrics, _ = lagged.take(0, problems_of(0), problems_of, 0)
    assert [p.id for p in problems_of(0)] == ["p4", "p2"]
    assert [p.id for p in batch.problems] == ["p2"] and batch.num_samples == 2
    assert metrics["rollout/too_old_samples"] == 2
    lagged, engine, _ = scheduler(tiny_qwen3_tokenizer, 1, stale=["Problem number"])
    with pytest.raises(StaleRolloutError, match="outside the allowed lag 0..1"):
        lagged.take(0, problems_of(0), problems_of, 0)


def test_a_version_beyond_the_lag_is_refused(tiny_qwen3_tokenizer):
    lagged, engine, _ = scheduler(tiny_qwen3_tokenizer, 1)
    engine.weight_version = 7  # an engine ahead of the trainer (reloaded by another run)
    with pytest.raises(StaleRolloutError, match=r"\[7\] is outside"):
        lagged.take(3, problems_of(3), problems_of, 3)


@pytest.mark.parametrize("background", [False, True])
def test_a_resume_from_a_checkpoint_trains_on_the_saved_batches_and_matches(tiny_qwen3_tokenizer, tmp_path,
                                                                             background):
    whole, engine, _ = scheduler(tiny_qwen3_tokenizer, 2)
    want = run(whole, engine, 6, last_step=5)

    first, engine, _ = scheduler(tiny_qwen3_tokenizer, 2, background=background)
    run(first, engine, 3, last_step=5)
    assert first.in_flight == [3, 4]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # plain data: loads like a checkpoint

    resumed, engine, judge = scheduler(tiny_qwen3_tokenizer, 2, version=3, background=background)  # pushed at resume
    resumed.load_state_dict(state)
    got = run(resumed, engine, 6, last_step=5, start=3)
    for (a, ma, _, _), (b, mb, saved, _) in zip(want[3:], got):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.rewards, b.rewards)
        assert torch.equal(a.versions, b.versions) and ma["rollout/lag_mean"] == mb["rollout/lag_mean"]
    assert [g[2] for g in got] == [True, True, False]
    assert [v for v, _ in engine.calls] == [3] and judge.calls == 1  # only batch 5 was generated and graded


def test_a_checkpoint_of_more_ranks_is_refused(tiny_qwen3_tokenizer):
    first, engine, _ = scheduler(tiny_qwen3_tokenizer, 1)
    run(first, engine, 1, last_step=5)
    state = first.state_dict()
    state["shares"] = state["shares"] * 2
    resumed, _, _ = scheduler(tiny_qwen3_tokenizer, 1)
    resumed.load_state_dict(state)
    with pytest.raises(RuntimeError, match="from 2 ranks; resume it with 2 ranks, not 1"):
        resumed.take(1, problems_of(1), problems_of, 5)


def test_mixed_versions_only_when_asked_and_kept_per_sample():
    p = Problem("a", "x")
    groups = [[Completion([1], [2], [-0.1], "stop", "t", 4), Completion([1], [3], [-0.2], "stop", "t", 5)]]
    args = ([p], groups, [Verdict(1), Verdict(2)], torch.tensor([0.1, 0.2]), torch.tensor([True, True]), 0)
    with pytest.raises(ValueError, match="several weight versions"):
        build_rollout_batch(*args)
    batch = build_rollout_batch(*args, mixed_versions=True)
    assert batch.versions.tolist() == [4, 5] and batch.weight_version == 4


def test_importance_metrics_are_exact():
    w = torch.tensor([0.5, 1.0, 2.0, 0.5], dtype=torch.float64)
    got = importance_metrics({"is_sum": float(w.sum()), "is_sq_sum": float((w * w).sum()), "is_max": 2.0,
                              "token_count": 4.0})
    # (sum w)^2 / sum w^2 = 16 / 5.5
    assert got == {"train/is_weight_mean": 1.0, "train/is_weight_max": 2.0, "train/is_ess": 16 / 5.5,
                   "train/is_ess_fraction": 16 / 5.5 / 4}


def test_lag_refuses_truncated_sampling_and_warns_on_a_narrow_ratio_clip():
    dapo, qed = get_policy_loss("dapo"), get_policy_loss("qed_nano")
    for bad in (SamplingSettings(top_p=0.95), SamplingSettings(top_k=20)):
        with pytest.raises(ValueError, match="needs sampling.top_p 1.0 and no sampling.top_k"):
            check_lag_settings(bad, "tis", qed, {}, False)
    with pytest.raises(ValueError, match="reasoning cache"):
        check_lag_settings(SAMPLING, "tis", qed, {}, True)
    with pytest.warns(LagWarning, match="eps_low.*0.2"):
        check_lag_settings(SAMPLING, "ratio", dapo, {}, False)
    with pytest.warns(LagWarning, match="'eps': 0.5"):
        check_lag_settings(SAMPLING, "ratio", qed, {"eps": 0.5}, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_lag_settings(SAMPLING, "ratio", qed, {}, False)  # eps 4: wide
        check_lag_settings(SAMPLING, "tis", dapo, {}, False)  # tis corrects the lag


def test_the_correction_defaults_to_tis_under_lag(tiny_model_dir):
    from qed_lightning.modules import GRPOModule

    judge = RuleJudge("qed_lightning.judging.rules:share_of_letter_e", answer_mode="whole")
    assert GRPOModule(model=str(tiny_model_dir), judge=judge).hparams.mismatch_correction == "ratio"
    assert GRPOModule(model=str(tiny_model_dir), judge=judge, max_lag=1).hparams.mismatch_correction == "tis"
    lagged_ratio = GRPOModule(model=str(tiny_model_dir), judge=judge, max_lag=1, mismatch_correction="ratio")
    assert lagged_ratio.hparams.mismatch_correction == "ratio"
    with pytest.warns(LagWarning):
        GRPOModule(model=str(tiny_model_dir), judge=judge, max_lag=1, loss="grpo", mismatch_correction="ratio")
    with pytest.raises(ValueError, match="judge_overlap .* rollout_chunks >= 2"):
        GRPOModule(model=str(tiny_model_dir), judge=judge, judge_overlap=True)
    with pytest.raises(ValueError, match="judge_overlap is for max_lag 0"):
        GRPOModule(model=str(tiny_model_dir), judge=judge, judge_overlap=True, rollout_chunks=2, max_lag=1)
    with pytest.raises(ValueError, match="max_lag must be >= 0"):
        GRPOModule(model=str(tiny_model_dir), judge=judge, max_lag=-1)


def test_an_in_process_grader_is_refused_in_the_background(tiny_model_dir):
    from qed_lightning.judging.engine_client import InProcessVLLMClient
    from qed_lightning.judging.llm_judge import LLMJudge
    from qed_lightning.modules import GRPOModule

    client = InProcessVLLMClient.__new__(InProcessVLLMClient)  # no engine started: only its type matters here
    judge = LLMJudge.__new__(LLMJudge)
    judge.client = client
    for settings in ({"max_lag": 1}, {"judge_overlap": True, "rollout_chunks": 2}):
        with pytest.raises(ValueError, match="in-process vLLM grader"):
            GRPOModule(model=str(tiny_model_dir), judge=judge, **settings)
