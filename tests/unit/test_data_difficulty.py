"""``qed data difficulty``: FineProofs-RL's columns equal a hand computation from
scripted grades, failed gradings are left out and counted, a killed run resumes per
problem, and the RL loader's difficulty filter reads the output."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qed_lightning.contracts import Completion, SamplingSettings
from qed_lightning.data.sources import iter_rows
from qed_lightning.data_pipeline.difficulty import estimate, write_outputs
from qed_lightning.data_pipeline.inputs import read_inputs
from qed_lightning.data_pipeline.store import ResultStore
from qed_lightning.data_pipeline.summary import Summary
from qed_lightning.judging import LLMJudge
from qed_lightning.judging.openai_client import OpenAICompatibleClient
from qed_lightning.rollouts.problems import ProblemColumns, rows_to_problems
from qed_lightning.rollouts.producer import RolloutProducer
from qed_lightning.testing.fault_server_handle import FaultServer

# completions per problem; the grader's verdict is the SCORE= in the graded completion
SCRIPT = {
    "alpha": ["SCORE=7", "SCORE=0", "SCORE=3", "SCORE=7"],
    "beta": ["SCORE=0", "SCORE=0", "SCORE=0", "SCORE=0"],
    "gamma": ["SCORE=5", "FAULT=http_400", "SCORE=5", "SCORE=1"],  # one grading fails for good
}


class ScriptedEngine:
    """A RolloutEngine whose completions come from SCRIPT by the problem in the prompt."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.generated = tokenizer, []
        self.max_model_len = 4096

    def generate(self, prompt_ids, sampling, sample_seeds=None):
        groups = []
        for ids in prompt_ids:
            name = next(k for k in SCRIPT if k in self.tokenizer.decode(ids))
            self.generated.append(name)
            texts = SCRIPT[name][:sampling.n]
            groups.append([Completion(list(ids), self.tokenizer.encode(t), [0.0] * len(self.tokenizer.encode(t)),
                                      "stop", t, 0) for t in texts])
        return groups


@pytest.fixture
def grader():
    with FaultServer() as srv:
        yield srv


def setup(tmp_path: Path, tokenizer, grader):
    src = tmp_path / "rl.jsonl"
    src.write_text("".join(json.dumps({"id": name, "problem": f"Prove {name}.", "rubrics": "(7 pts) all",
                                       "source": "olympiads"}) + "\n" for name in SCRIPT))
    rows, _ = read_inputs(str(src), {"problem": "problem", "rubric": "rubrics"}, id_column="id")
    judge = LLMJudge(OpenAICompatibleClient(grader.base_url, "judge", max_attempts=1, max_concurrency=4),
                     answer_mode="whole", max_failed_batches=0)
    engine = ScriptedEngine(tokenizer)
    producer = RolloutProducer(engine, judge, tokenizer, SamplingSettings(n=4, max_tokens=64), seed=0)
    return rows, engine, producer


def test_columns_equal_a_hand_computation(tmp_path, tiny_smollm2_tokenizer, grader):
    rows, engine, producer = setup(tmp_path, tiny_smollm2_tokenizer, grader)
    summary = Summary("difficulty")
    with ResultStore(tmp_path / "out/requests.jsonl") as store:
        estimate(producer, rows, store, problems_per_call=2, summary=summary, progress=False)
        write_outputs(rows, store, tmp_path / "out", summary)
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out/difficulty.jsonl").read_text().splitlines())}
    a = out["alpha"]
    assert a["scores"] == [7, 0, 3, 7] and a["rewards"] == [1.0, 0.0, 3 / 7, 1.0] and a["num_rewards"] == 4
    # mean (1 + 0 + 3/7 + 1) / 4 = 17/28; deviations 11, -17, -5, 11 (/28): variance 556 / 28^2 / 4
    assert a["reward_mean"] == pytest.approx(17 / 28, abs=1e-12)
    assert a["reward_std"] == pytest.approx(math.sqrt(556) / 56, abs=1e-12)
    assert (out["beta"]["reward_mean"], out["beta"]["reward_std"]) == (0.0, 0.0)
    g = out["gamma"]  # the failed grading is left out, not scored 0
    assert g["scores"] == [5, 5, 1] and g["num_rewards"] == 3 and g["failed_verdicts"] == 1
    assert g["reward_mean"] == pytest.approx(11 / 21, abs=1e-12)
    assert g["reward_std"] == pytest.approx(math.sqrt(((5 - 11 / 3) ** 2 * 2 + (1 - 11 / 3) ** 2) / 3) / 7, abs=1e-12)
    assert a["source"] == "olympiads" and summary.counts["rollouts"] == 12 and summary.counts["failed_verdicts"] == 1
    # RolloutDataModule's difficulty filter reads the output as it is
    kept, filtered = rows_to_problems(iter_rows(str(tmp_path / "out/difficulty.jsonl")), ProblemColumns(id="id"),
                                      difficulty_filter=True, max_reward_mean=0.7, min_reward_std=0.08)
    assert [p.id for p in kept] == ["alpha", "gamma"] and filtered == 1  # beta: std 0


class Killed(Exception):
    pass


def test_a_killed_run_resumes_per_problem(tmp_path, tiny_smollm2_tokenizer, grader):
    rows, engine, producer = setup(tmp_path, tiny_smollm2_tokenizer, grader)
    real, calls = producer.produce, []

    def dies_on_second_chunk(problems, step):
        calls.append([p.id for p in problems])
        if len(calls) == 2:
            raise Killed
        return real(problems, step)

    producer.produce = dies_on_second_chunk
    path = tmp_path / "out/requests.jsonl"
    with pytest.raises(Killed), ResultStore(path) as store:
        estimate(producer, rows, store, problems_per_call=1, summary=Summary("d"), progress=False)
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["alpha"]
    producer.produce = real
    summary = Summary("d")
    with ResultStore(path) as store:
        estimate(producer, rows, store, problems_per_call=1, summary=summary, progress=False)
    assert engine.generated == ["alpha", "beta", "gamma"]  # each problem rolled out once over both runs
    assert summary.counts["problems_already_done"] == 1
    assert sorted(json.loads(line)["key"] for line in path.read_text().splitlines()) == ["alpha", "beta", "gamma"]
