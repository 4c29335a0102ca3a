"""The parts of preemption and resume that need no training run: the signal flag,
SLURM job facts, logger version pinning, the appending CSV logger, saved rollouts,
the SFT sampler's resume position and the rollout table."""
import csv
import os
import signal

import pytest
import torch

from qed_lightning.contracts import Completion, Problem, Verdict
from qed_lightning.data.steps import StepSampler
from qed_lightning.loggers import ResumableCSVLogger, log_rollout_table
from qed_lightning.loggers.rollout_table import markdown_table
from qed_lightning.preemption.signals import PreemptionRequest
from qed_lightning.preemption.slurm import (pin_logger_versions, slurm_job_id, slurm_log_version,
                                            undetected_slurm_reason)
from qed_lightning.rollouts.batch import build_rollout_batch
from qed_lightning.rollouts.pending import PendingRollouts, PendingRolloutsError
from tensorboard_events import tensorboard_texts

JOB = {"SLURM_JOB_ID": "812", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "qed-rl"}


def test_signal_only_raises_the_flag_and_handlers_are_restored():
    request, before = PreemptionRequest(), signal.getsignal(signal.SIGUSR2)
    assert request.install(["SIGUSR2"]) == ["SIGUSR2"]
    assert not request.requested
    os.kill(os.getpid(), signal.SIGUSR2)
    assert request.requested and request.signal_name == "SIGUSR2"
    request.restore()
    assert signal.getsignal(signal.SIGUSR2) == before
    with pytest.raises(ValueError, match="SIGKILL cannot be handled"):
        request.install(["SIGKILL"])
    with pytest.raises(ValueError, match="unknown signal 'USR1'"):
        request.install(["USR1"])


def test_slurm_job_facts():
    assert slurm_job_id(JOB) == "812" and slurm_log_version(JOB) == "slurm_812"
    array = {**JOB, "SLURM_ARRAY_JOB_ID": "900", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm_job_id(array) == "900_3" and slurm_log_version(array) == "slurm_900_3"
    assert slurm_job_id({}) is None and slurm_log_version({}) is None
    assert undetected_slurm_reason(JOB) is None
    assert "named 'bash'" in undetected_slurm_reason({**JOB, "SLURM_JOB_NAME": "bash"})
    assert "srun" in undetected_slurm_reason({"SLURM_JOB_ID": "812"})
    assert undetected_slurm_reason({}) is None


def test_logger_versions_are_pinned_to_the_job_and_set_ones_are_kept():
    trainer = {"logger": [
        {"class_path": "qed_lightning.loggers.ResumableCSVLogger", "init_args": {"save_dir": "runs", "version": None}},
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"version": "mine"}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"id": None, "resume": None}},
    ]}
    assert pin_logger_versions(trainer, JOB) == ["ResumableCSVLogger", "WandbLogger"]
    csv_args, tb_args, wandb_args = (e["init_args"] for e in trainer["logger"])
    assert csv_args["version"] == "slurm_812" and tb_args["version"] == "mine"
    assert wandb_args == {"id": "slurm_812", "resume": "allow"}
    # outside SLURM, or in a job Lightning would not treat as one: nothing changes
    single = {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"version": None}}}
    assert pin_logger_versions(single, {}) == [] and single["logger"]["init_args"]["version"] is None
    assert pin_logger_versions(single, {**JOB, "SLURM_JOB_NAME": "interactive"}) == []


def test_cli_pins_the_csv_version_inside_a_slurm_job(monkeypatch, tmp_path, tiny_model_dir):
    from qed_lightning.cli import run_cli

    for k, v in {**JOB, "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "localhost",
                 "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(k, v)
    cli = run_cli(["--config", "configs/demo/sft.yaml", f"--model.model={tiny_model_dir}",
                   f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    assert cli.trainer.logger.version == "slurm_812"
    assert cli.trainer.log_dir == str(tmp_path / "demo-sft" / "slurm_812")


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_logger_appends_across_resumes_and_drops_redone_steps(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="run", version="v")
    for step in range(3):
        first.log_metrics({"loss": float(step)}, step=step)
    first.save()
    # a new process, same version: Lightning's CSVLogger would delete metrics.csv here
    second = ResumableCSVLogger(tmp_path, name="run", version="v")
    second.log_metrics({"loss": 3.0, "reward": 0.5}, step=3)
    second.save()
    rows = _csv_rows(tmp_path / "run" / "v" / "metrics.csv")
    assert [(r["step"], r["loss"], r["reward"]) for r in rows] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "2.0", ""), ("3", "3.0", "0.5")]
    second.log_metrics({"eval/demo/avg": 0.5}, step=2)  # evaluated after 2 finished steps
    second.save()
    # resuming from the checkpoint after 2 steps: steps 2 and 3 will be logged again;
    # the evaluation after step 2 is history
    third = ResumableCSVLogger(tmp_path, name="run", version="v")
    third.drop_rows_from_step(2)
    third.log_metrics({"loss": 2.5}, step=2)
    third.save()
    rows = _csv_rows(tmp_path / "run" / "v" / "metrics.csv")
    assert [(r["step"], r["loss"], r["eval/demo/avg"]) for r in rows] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "", "0.5"), ("2", "2.5", "")]
    assert list(rows[0]) == ["eval/demo/avg", "loss", "reward", "step"]  # columns of earlier attempts kept


def _batch():
    problems = [Problem(id="p0", statement="s"), Problem(id="p1", statement="t")]
    groups = [[Completion(prompt_ids=[1, 2], completion_ids=[3, 4], logprobs=[-0.5, -0.25], text="ab",
                          finish_reason="stop", weight_version=3)] for _ in problems]
    verdicts = [Verdict(score=7), Verdict(score=0)]
    return build_rollout_batch(problems, groups, verdicts, torch.tensor([1.0, 0.0]), torch.tensor([True, True]), 0)


def test_saved_rollouts_round_trip_once_and_refuse_the_wrong_step(tmp_path):
    pending = PendingRollouts()
    assert pending.take(3, 0, 2) is None  # nothing saved
    path = pending.save(tmp_path, 3, 1, 2, _batch(), {"rollout/generate_s": 9.0})
    assert path == tmp_path / "step_000003.rank1.pt"
    restored = PendingRollouts()
    restored.load_state_dict(pending.state_dict())
    with pytest.raises(PendingRolloutsError, match="rollouts of step 3 but the run resumed at step 4"):
        restored.take(4, 1, 2)
    with pytest.raises(PendingRolloutsError, match="from 2 ranks; resume it with 2 ranks, not 1"):
        restored.take(3, 0, 1)
    with pytest.raises(PendingRolloutsError, match="step_000003.rank0.pt: .* file is missing"):
        restored.take(3, 0, 2)
    saved = restored.take(3, 1, 2)
    batch, metrics = saved["batch"], saved["metrics"]
    assert torch.equal(batch.input_ids, _batch().input_ids) and batch.verdicts[0].score == 7
    assert metrics == {"rollout/generate_s": 9.0} and saved["finished"] is None
    assert restored.take(3, 1, 2) is None and restored.state_dict()["step"] is None  # used once
    # an interrupted generation: only its finished groups
    finished = {"p0": (_batch().completions[:1], _batch().verdicts[:1])}
    pending.save(tmp_path, 5, 0, 1, finished=finished)
    saved = pending.take(5, 0, 1)
    assert saved["batch"] is None and list(saved["finished"]) == ["p0"]
    assert saved["finished"]["p0"][1][0].score == 7
    with pytest.raises(ValueError, match="either a whole batch or the finished groups"):
        pending.save(tmp_path, 5, 0, 1)


def test_sft_sampler_resumes_inside_its_epoch():
    full = list(StepSampler(10, 3, shuffle=True, seed=5))
    resumed = StepSampler(10, 3, shuffle=True, seed=5)
    resumed.skip_steps = 2
    assert list(resumed) == full[2:]
    assert list(resumed) == full  # the next epoch starts at its beginning
    assert len(resumed) == 4


def test_markdown_table_escapes_cells():
    table = markdown_table([{"problem_id": "p|1", "text": "a\nb\x0bc\u2028d", "score": 7}], ("problem_id", "score", "text"))
    assert table.splitlines() == ["| problem_id | score | text |", "|---|---|---|", "| p\\|1 | 7 | a<br>b<br>c<br>d |"]


def test_rollout_table_goes_to_tensorboard_and_not_to_csv(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX is a dev dependency (make install)")
    from lightning.pytorch.loggers import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path, name="tb", version="v")
    rows = [{"problem_id": "p0", "sample": 0, "score": 7, "reward": 1.0, "completion_tokens": 2,
             "finish_reason": "stop", "text": "proof"}]
    assert log_rollout_table([tb, ResumableCSVLogger(tmp_path)], 4, rows) == ["TensorBoardLogger"]
    tb.finalize("success")  # tensorboardX writes from a queue: closing drains it
    [(tag, step, text)] = tensorboard_texts(tmp_path / "tb")
    assert tag.startswith("rollouts") and step == 4
    assert "| p0 | 0 | 7 | 1.0 | 2 | stop | proof |" in text


class _Trainer:
    is_global_zero = True


def test_a_refused_requeue_fails_the_run_instead_of_ending_it_quietly(monkeypatch):
    from qed_lightning.callbacks import preemption

    monkeypatch.setattr(preemption, "requeue_job", lambda job: False)
    callback = preemption.PreemptionCallback()
    callback.saved, callback._requeue_job = {"path": "runs/x/checkpoints/last.ckpt"}, "812"
    with pytest.raises(RuntimeError, match="could not requeue SLURM job 812: resubmit it"):
        callback.teardown(_Trainer(), None, "fit")
    calls = []
    monkeypatch.setattr(preemption, "requeue_job", lambda job: calls.append(job) or True)
    callback._requeue_job = "812"
    callback.teardown(_Trainer(), None, "fit")
    callback.teardown(_Trainer(), None, "fit")  # once only
    assert calls == ["812"]


def test_lightning_reaches_the_sft_sampler_each_epoch():
    """Lightning calls set_epoch on ``dataloader.sampler`` and ``batch_sampler.sampler``
    at each epoch start; StepSampler is the loader's batch sampler, so it must be found
    there, or every epoch would repeat the first one's order."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    sampler = StepSampler(10, 3, shuffle=True, seed=5)
    loader = torch.utils.data.DataLoader(list(range(10)), batch_sampler=sampler)
    first = list(sampler)
    _set_sampler_epoch(loader, 1)
    assert sampler.epoch == 1 and list(sampler) != first
