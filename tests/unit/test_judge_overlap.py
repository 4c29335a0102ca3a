"""Grading overlapped with generation (``judge_overlap``) over a scripted engine and
judge: the same engine calls, judge calls and batch as the sequential producer; each
part is graded while the next generates; a stop between parts waits for the part
still being graded and hands it over with the finished groups."""
import threading

import pytest
import torch

from qed_lightning.contracts import Completion, Problem, SamplingSettings, Verdict
from qed_lightning.rollouts.producer import RolloutProducer, RolloutsInterrupted

PROBLEMS = [Problem(f"p{i}", f"Problem number {i}.") for i in range(6)]
SAMPLING = SamplingSettings(temperature=1.0, max_tokens=16, n=2)


class Engine:
    """Each sample's text depends on its seed (as a seeded engine's does); logs calls."""

    max_model_len = 4096

    def __init__(self, tokenizer, log):
        self.tokenizer, self.log, self.calls = tokenizer, log, 0
        self.started = [threading.Event() for _ in range(8)]  # set when call k starts

    def generate(self, prompts, sampling, sample_seeds=None, regex=None):
        self.started[self.calls].set()
        self.log.append(("generate", self.calls))
        self.calls += 1
        out = []
        for prompt, seeds in zip(prompts, sample_seeds):
            group = []
            for seed in seeds:
                text = "e" * (seed % 7) + "x"
                ids = self.tokenizer(text, add_special_tokens=False).input_ids
                group.append(Completion(list(prompt), ids, [-0.25] * len(ids), "stop", text, 0))
            out.append(group)
        return out


class Judge:
    """Scores the count of e; ``wait_for`` (an engine) makes the grading of part k wait
    until the engine started part k + 1: it returns only if the two overlap."""

    def __init__(self, log, wait_for=None):
        self.log, self.wait_for, self.calls, self.items = log, wait_for, 0, []

    def grade(self, items):
        k, self.calls = self.calls, self.calls + 1
        overlapped = None
        if self.wait_for is not None:
            # a deadlock guard, not a timing check: without overlap the next part never starts
            overlapped = self.wait_for.started[k + 1].wait(timeout=20)
        self.log.append(("graded", k, overlapped))
        self.items.append([item.proof for item in items])
        return [Verdict(min(7, item.proof.count("e"))) for item in items]


def make(tokenizer, overlap, chunks=3, wait=False):
    log = []
    engine = Engine(tokenizer, log)
    judge = Judge(log, wait_for=engine if wait else None)
    producer = RolloutProducer(engine, judge, tokenizer, SAMPLING, seed=5, chunks=chunks, judge_overlap=overlap)
    return producer, engine, judge, log


def batch_fields(batch):
    return (batch.input_ids, batch.completion_mask, batch.sampling_logprobs, batch.rewards, batch.reward_mask,
            batch.group_ids, [p.id for p in batch.problems], [v.score for v in batch.verdicts])


def test_overlapped_batch_equals_the_sequential_one(tiny_qwen3_tokenizer):
    sequential, _, judge_a, log_a = make(tiny_qwen3_tokenizer, overlap=False)
    overlapped, _, judge_b, log_b = make(tiny_qwen3_tokenizer, overlap=True)
    a, b = sequential.produce(PROBLEMS, step=4), overlapped.produce(PROBLEMS, step=4)
    for x, y in zip(batch_fields(a), batch_fields(b)):
        assert torch.equal(x, y) if torch.is_tensor(x) else x == y
    assert judge_a.items == judge_b.items  # the same grading calls, part by part, in order
    assert len(judge_b.items) == 3 and [len(items) for items in judge_b.items] == [4, 4, 4]
    # sequential: grade k right after generate k; overlapped: grade k after generate k + 1 started
    assert [e[:2] for e in log_a] == [("generate", 0), ("graded", 0), ("generate", 1), ("graded", 1),
                                      ("generate", 2), ("graded", 2)]
    assert {"rollout/judge_wait_s", "time/judge_hidden_s"} <= overlapped.last_metrics.keys()
    assert "rollout/judge_wait_s" not in sequential.last_metrics


def test_each_part_is_graded_while_the_next_generates(tiny_qwen3_tokenizer):
    producer, engine, judge, log = make(tiny_qwen3_tokenizer, overlap=True, wait=True)
    producer.produce(PROBLEMS[:4], step=0)  # the last part's grading has no next part: it is not waited on
    graded = [entry for entry in log if entry[0] == "graded"]
    assert [g[2] for g in graded[:2]] == [True, True], log


def test_a_stop_between_parts_waits_for_the_part_being_graded(tiny_qwen3_tokenizer):
    producer, engine, judge, log = make(tiny_qwen3_tokenizer, overlap=True)
    with pytest.raises(RolloutsInterrupted) as stop:
        producer.produce(PROBLEMS, step=2, stop_requested=lambda: engine.calls == 2)
    finished = stop.value.finished
    assert sorted(finished) == ["p0", "p1", "p2", "p3"]  # parts 0 and 1: part 1 was still being graded
    for completions, verdicts in finished.values():
        assert [v.score for v in verdicts] == [min(7, c.text.count("e")) for c in completions]
    assert engine.calls == 2 and judge.calls == 2

    # resumed: only the last part is generated and graded; the batch equals an uninterrupted one
    again, engine2, judge2, _ = make(tiny_qwen3_tokenizer, overlap=True)
    batch = again.produce(PROBLEMS, step=2, finished=finished)
    assert engine2.calls == 1 and judge2.calls == 1
    whole, _, _, _ = make(tiny_qwen3_tokenizer, overlap=False)
    for x, y in zip(batch_fields(batch), batch_fields(whole.produce(PROBLEMS, step=2))):
        assert torch.equal(x, y) if torch.is_tensor(x) else x == y


def test_a_failed_grading_is_raised_and_the_thread_is_not_left_running(tiny_qwen3_tokenizer):
    producer, engine, judge, _ = make(tiny_qwen3_tokenizer, overlap=True)

    def down(items):
        raise ConnectionError("grader went away")

    judge.grade = down
    with pytest.raises(ConnectionError, match="grader went away"):
        producer.produce(PROBLEMS, step=0)
    assert engine.calls == 2  # met when part 0's verdicts are collected, after part 1 generated


def test_overlap_needs_parts(tiny_qwen3_tokenizer):
    with pytest.raises(ValueError, match="chunks >= 2"):
        make(tiny_qwen3_tokenizer, overlap=True, chunks=1)
