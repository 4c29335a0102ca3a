"""One seed for the run: ``seed_everything`` drives the rollout sampling seed and the
data order unless a component sets its own (issue: two runs with different
``--seed_everything`` used to sample the same rollouts)."""
from pathlib import Path

import pytest

from qed_lightning.cli import run_cli
from qed_lightning.rollouts.seeds import sample_seed
from qed_lightning.seeding import run_seed

ROOT = Path(__file__).resolve().parents[2]
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32", "--trainer.strategy=auto"]


def _cli(config: str, tiny_model_dir, tmp_path, *extra):
    args = ["--config", str(ROOT / config), f"--model.init_args.model={tiny_model_dir}",
            f"--trainer.default_root_dir={tmp_path}", *CPU, *extra]
    return run_cli(args, run=False)


@pytest.mark.parametrize("config", ["configs/rl/qed_nano.yaml", "configs/rc/qed_nano_rc.yaml"])
def test_rl_sampling_seed_and_problem_order_follow_seed_everything(config, tiny_model_dir, tmp_path):
    seeds = {}
    for run_seed_value in (11, 12):
        cli = _cli(config, tiny_model_dir, tmp_path, f"--seed_everything={run_seed_value}")
        seeds[run_seed_value] = (cli.model.hparams.seed, cli.datamodule.seed)
        # the resolved seed is what config.yaml records
        assert cli.config.model.init_args.seed == run_seed_value
        assert cli.config.data.init_args.seed == run_seed_value
    assert seeds == {11: (11, 11), 12: (12, 12)}
    # different run seeds -> different per-sample sampling seeds for the same problem
    assert sample_seed(11, 0, "p1", 0) != sample_seed(12, 0, "p1", 0)


def test_an_explicit_component_seed_wins(tiny_model_dir, tmp_path):
    cli = _cli("configs/rl/qed_nano.yaml", tiny_model_dir, tmp_path, "--seed_everything=11",
               "--model.init_args.seed=5")
    assert (cli.model.hparams.seed, cli.datamodule.seed) == (5, 11)


def test_sft_data_order_follows_seed_everything(tiny_model_dir, tmp_path):
    cli = _cli("configs/sft/qed_nano_sft.yaml", tiny_model_dir, tmp_path, "--seed_everything=13",
               "--trainer.num_nodes=1")
    assert cli.datamodule.hparams.seed == 13


def test_run_seed_reads_the_seed_everything_environment(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "21")
    assert run_seed(None) == 21 and run_seed(4) == 4
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert run_seed(None) == 0
