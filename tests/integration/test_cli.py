"""The `qed` command: help, print_config for every shipped config, stacked presets."""
import subprocess
import sys
from pathlib import Path

import pytest

from qed_lightning.cli import main, run_cli

ROOT = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
JUDGE_BENCH_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name == "judge" and p.name.startswith("bench_")]
JUDGE_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name == "judge" and p not in JUDGE_BENCH_CONFIGS]  # `qed judge`
EVAL_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name == "eval" or p.name == "eval.yaml"]  # `qed eval`
# A scaffold config holds only the `scaffold:` block: it goes on top of a benchmark config.
SCAFFOLD_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name == "scaffolds"]
DATA_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name == "data" or p.name.startswith("data_")]  # `qed data <step>`
# Configs that go on top of another (the base config they extend).
OVERLAYS = {"rl/qed_nano_overlap.yaml": "rl/qed_nano.yaml", "rl/qed_nano_served.yaml": "rl/qed_nano.yaml"}
CONFIGS = [p for p in ALL_CONFIGS if p not in JUDGE_CONFIGS + JUDGE_BENCH_CONFIGS + EVAL_CONFIGS + SCAFFOLD_CONFIGS
           + DATA_CONFIGS]


def _with_base(config: Path) -> list[str]:
    base = OVERLAYS.get(config.relative_to(ROOT / "configs").as_posix())
    return (["--config", str(ROOT / "configs" / base)] if base else []) + ["--config", str(config)]
PRESETS = sorted((ROOT / "callbacks").glob("*.yaml"))
HEAVY = ("vllm", "liger_kernel", "bitsandbytes", "httpx", "openai")  # (lightning itself imports triton)


def test_help_runs_and_imports_no_heavy_dependency():
    out = subprocess.run([sys.executable, "-m", "qed_lightning", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all(f"\n  {name} " in out.stdout for name in ("fit", "eval", "judge", "export"))
    probe = f"import sys, qed_lightning.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_every_config_is_listed():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in ALL_CONFIGS}
    assert {"demo/sft.yaml", "sft/qed_nano_sft.yaml", "judge/local_vllm.yaml", "demo/rc.yaml", "rc/qed_nano_rc.yaml",
            "eval/imo_proofbench.yaml", "eval/proofbench.yaml", "eval/answerbench.yaml", "demo/eval.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_print_config_of_every_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_with_base(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: qed_lightning." in printed
    assert "checkpoint:" in printed and "export:" in printed


@pytest.mark.parametrize("config", JUDGE_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_print_config_of_every_judge_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["judge", "--config", str(config), "--input", "in.jsonl", "--output", "out.jsonl", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: qed_lightning.judging." in printed and "api_key_env:" in printed


@pytest.mark.parametrize("config", JUDGE_BENCH_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_print_config_of_every_judge_bench_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["judge", "bench", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "judges:" in (printed := capsys.readouterr().out) and "class_path: qed_lightning.judging." in printed


@pytest.mark.parametrize("config", SCAFFOLD_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_print_config_of_every_scaffold_config(config, capsys):
    base = ROOT / ("configs/demo/eval.yaml" if config.parent.parent.name == "demo" else "configs/eval/imo_proofbench.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--config", str(base), "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "mode: scaffold" in printed and f"class_path: qed_lightning.scaffolds.{config.stem}." in printed


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_print_config_of_every_data_config(config, capsys):
    step = config.stem.removeprefix("data_")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", step, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "output_dir:" in capsys.readouterr().out


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_print_config_of_every_eval_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: qed_lightning.evaluation.policies." in printed and "class_path: qed_lightning.judging." in printed


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_subcommand_help_of_every_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_with_base(config), "--help"])
    assert exit_info.value.code in (0, None)
    assert "--trainer.max_epochs" in capsys.readouterr().out
    # The signature is the config: SFTModule's docstring reaches --help.
    with pytest.raises(SystemExit):
        main(["fit", "--model", "qed_lightning.modules.SFTModule", "--model.help", "qed_lightning.modules.SFTModule"])
    assert "Peak learning rate" in capsys.readouterr().out


def test_stacked_presets_append_callbacks(tiny_model_dir, tmp_path):
    assert len(PRESETS) >= 2
    args = ["--config", str(ROOT / "configs/demo/sft.yaml")]
    for preset in ("lr_monitor.yaml", "device_stats.yaml"):
        args += ["--config", str(ROOT / "callbacks" / preset)]
    args += [f"--model.model={tiny_model_dir}", f"--trainer.default_root_dir={tmp_path}"]
    cli = run_cli(args, run=False)
    names = [type(cb).__name__ for cb in cli.trainer.callbacks]
    assert "LearningRateMonitor" in names and "DeviceStatsMonitor" in names
    assert "QedCheckpoint" in names and "HFExportCallback" in names


def test_environment_variables_set_defaults(monkeypatch, capsys):
    monkeypatch.setenv("PL_FIT__TRAINER__MAX_STEPS", "7")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/demo/sft.yaml"), "--print_config"])
    assert "max_steps: 7" in capsys.readouterr().out
