"""The ``qed`` command surface: every command listed and answering ``--help``, a fast
top level, ``null`` at every depth, user errors as one message, quiet logs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from qed_lightning import __version__
from qed_lightning.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "lightning", "vllm", "transformers", "jsonargparse")
ENV = {k: v for k, v in os.environ.items() if k not in ("QED_DEBUG", "QED_VERBOSE")}


def qed(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "qed_lightning", *args], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, **(env or {})}, cwd=cwd)


def imported_by(*args: str) -> tuple[list[str], str]:
    """(heavy modules in sys.modules after ``qed <args>``, its stdout+stderr)."""
    probe = textwrap.dedent(f"""
        import contextlib, io, sys
        from qed_lightning.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main({list(args)!r})
            except SystemExit:
                pass
        print(repr([m for m in {HEAVY!r} if m in sys.modules]))
        print(out.getvalue())
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr
    first, _, rest = done.stdout.partition("\n")
    return eval(first), rest


def test_top_level_help_lists_every_command_without_heavy_imports():
    loaded, out = imported_by("--help")
    assert loaded == []
    for name in ("fit", "validate", "test", "predict", "eval", "judge", "export"):
        assert f"\n  {name.ljust(8)}  {COMMANDS[name]}\n" in out
    assert "--debug" in out and "--verbose" in out and "--version" in out


def test_version_and_a_mistyped_command_answer_without_heavy_imports():
    loaded, out = imported_by("--version")
    assert (loaded, out.strip()) == ([], f"qed_lightning {__version__}")
    loaded, out = imported_by("fitt", "--config", "x.yaml")
    assert loaded == []
    assert "unknown command 'fitt' (did you mean 'fit'?)" in out
    assert qed("evl").returncode == 2


@pytest.mark.parametrize("command, option", [
    ("fit", "--trainer.max_epochs"), ("validate", "--trainer.max_epochs"), ("test", "--ckpt_path"),
    ("predict", "--return_predictions"), ("eval", "--samples"), ("judge", "--input"), ("export", "checkpoint"),
])
def test_every_command_answers_help_with_its_own_options(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: qed ") and f" {command} " in out.splitlines()[0] + " "
    assert option in out


def print_config(capsys, *args) -> dict:
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_null_two_and_three_levels_deep_in_fit(capsys):
    cfg = print_config(capsys, "fit", "--config", str(ROOT / "configs/rl/qed_nano.yaml"),
                       "--model.init_args.judge.init_args.cache_dir=null",  # two levels
                       "--model.init_args.judge.init_args.client.init_args.reasoning_effort=null",  # three
                       "--model.judge.client.api_key_env", "null")  # three, short form, separate value
    judge = cfg["model"]["init_args"]["judge"]["init_args"]
    client = judge["client"]["init_args"]
    assert judge["cache_dir"] is None and client["reasoning_effort"] is None and client["api_key_env"] is None
    # nothing else of the nested classes changed
    assert judge["template"] == "rl_strict" and client["model"] == "openai/gpt-oss-20b" and client["api"] == "responses"


def test_null_two_and_three_levels_deep_in_judge(capsys):
    cfg = print_config(capsys, "judge", "--config", str(ROOT / "configs/judge/local_vllm.yaml"),
                       "--input", "in.jsonl", "--output", "out.jsonl",
                       "--judge.init_args.client.init_args.reasoning_effort=null",  # two levels
                       "--judge.init_args.client.init_args.extra_body.reasoning=null")  # three (a mapping's key)
    client = cfg["judge"]["init_args"]["client"]["init_args"]
    assert client["reasoning_effort"] is None and client["extra_body"] == {"reasoning": None}
    assert client["model"] == "openai/gpt-oss-20b" and client["max_tokens"] == 81920


def test_null_two_and_three_levels_deep_in_eval(capsys):
    cfg = print_config(capsys, "eval", "--config", str(ROOT / "configs/eval/imo_proofbench.yaml"),
                       "--judge.init_args.client.init_args.api_key_env=null",  # two levels
                       "--judge.init_args.client.init_args.extra_body.thinking=null")  # three
    client = cfg["judge"]["init_args"]["client"]["init_args"]
    assert client["api_key_env"] is None and client["extra_body"] == {"thinking": None}
    assert client["model"] == "gemini-3-pro-preview"


def write_proofs(path: Path) -> Path:
    good = {"id": "p1", "problem": "Show 1 = 1.", "proof": "Trivial.", "rubric": "7 for any proof."}
    path.write_text(json.dumps(good) + "\n" + '{"id": "p2", "problem": "cut off\n')
    return path


@pytest.mark.parametrize("debug", ["", "--debug", "QED_DEBUG=1"])
def test_a_data_error_is_one_message_and_debug_shows_the_traceback(tmp_path, debug):
    bad = write_proofs(tmp_path / "bad.jsonl")
    args = ["judge", "--config", str(ROOT / "configs/judge/local_vllm.yaml"),
            "--input", str(bad), "--output", str(tmp_path / "out.jsonl")]
    done = qed(*args, *(["--debug"] if debug == "--debug" else []),
               env={"QED_DEBUG": "1"} if debug == "QED_DEBUG=1" else None, cwd=tmp_path)  # the config's judge_cache/
    assert done.returncode != 0
    assert "bad.jsonl:2" in done.stderr  # the file and the row
    if debug:
        assert "Traceback (most recent call last)" in done.stderr
    else:
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert [line for line in done.stderr.splitlines() if line.startswith("qed judge: error: ")] == [
            next(line for line in done.stderr.splitlines() if "bad.jsonl:2" in line)]
        assert "--debug" in done.stderr.splitlines()[-1]


def test_a_data_error_in_fit_is_one_message_and_the_run_log_keeps_the_libraries_lines(tiny_model_dir, tmp_path):
    bad = write_proofs(tmp_path / "bad.jsonl")
    done = qed("fit", "--config", str(ROOT / "configs/demo/sft.yaml"), f"--model.init_args.model={tiny_model_dir}",
               f"--data.init_args.source={bad}", f"--trainer.logger.init_args.save_dir={tmp_path}",
               "--trainer.logger.init_args.version=run", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "bad.jsonl:2" in done.stderr
    assert "GPU available" not in done.stdout + done.stderr  # Lightning's INFO lines go to the log file
    log = (tmp_path / "demo-sft" / "run" / "qed.log").read_text()
    assert "GPU available: False" in log


QUIET_PROBE = """
import logging, sys, warnings
from pathlib import Path
from qed_lightning.cli import start, take_flags

def run():
    lib = logging.getLogger("vllm.model_executor.models.utils")
    lib.info("Starting to load model %s", "m")
    for layer in range(3):
        lib.warning("Attempted to load weight %s with dtype %s", f"layers.{layer}", "float32")
    for _ in range(2):
        warnings.warn("old API", FutureWarning, stacklevel=1)
        warnings.warn("old API", FutureWarning, stacklevel=1)  # same text, another line
    logging.getLogger("qed_lightning.rollouts").info("step %d: mean reward %.2f", 0, 0.5)
    from qed_lightning.cli.log_setup import attach_log_file, detach_log_file
    attach_log_file(Path(sys.argv[1]) / "qed.log")
    lib.warning("Attempted to load weight %s with dtype %s", "lm_head", "float32")
    detach_log_file()  # the run is over: the next run's lines wait for the next run's file
    lib.info("Starting to load model %s", "next")
    attach_log_file(Path(sys.argv[1]) / "next.log")

argv, debug, verbose = take_flags(sys.argv[2:])
start("probe", run, debug, verbose)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_console_shows_the_project_and_each_library_warning_once(tmp_path, verbose):
    done = subprocess.run([sys.executable, "-c", QUIET_PROBE, str(tmp_path), *(["--verbose"] if verbose else [])],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr
    console = done.stderr.splitlines()
    assert console.count("step 0: mean reward 0.50") == 1
    weights = [line for line in console if "Attempted to load weight" in line]
    warned = [line for line in console if "FutureWarning: old API" in line]
    loading = [line for line in console if "Starting to load model m" in line]
    if verbose:
        assert (len(weights), len(loading)) == (4, 1) and len(warned) >= 2
    else:
        assert weights == [
            "WARNING vllm.model_executor.models.utils: Attempted to load weight layers.0 with dtype float32"]
        assert len(warned) == 1 and loading == []
    log = (tmp_path / "qed.log").read_text()  # everything, what came before the file was known included
    assert log.count("Attempted to load weight") == 4 and "Starting to load model m" in log
    assert "step 0: mean reward 0.50" in log and "FutureWarning: old API" in log
    assert "model next" not in log and "Starting to load model next" in (tmp_path / "next.log").read_text()
