"""The ``qed`` command: training, evaluation, grading and export behind one entry point.

    qed fit --config configs/demo/sft.yaml --trainer.max_epochs=2
    qed fit --config configs/sft/qed_nano_sft.yaml --print_config
    qed export runs/.../checkpoints/last.ckpt out/model
    qed judge --config configs/judge/local_vllm.yaml --input proofs.jsonl --output verdicts.jsonl
    qed judge bench --config configs/judge/bench_demo.yaml --output_dir runs/judge_bench/demo
    qed eval --config configs/eval/imo_proofbench.yaml --policy.init_args.model=<export dir>

``qed --help`` and ``qed --version`` answer without importing torch, Lightning or vLLM;
each command imports what it needs. A bad setting or bad input ends the command with
one message (``--debug`` or ``QED_DEBUG=1`` shows the traceback, see ``cli.errors``);
the console shows the project's lines and each library warning once (``--verbose`` or
``QED_VERBOSE=1`` shows everything, see ``cli.log_setup``).
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from qed_lightning import __version__

__all__ = ["COMMANDS", "eval_command", "main", "run_cli", "start", "take_flags"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = {
    "fit": "train from a config: SFT, RL with a judge, RL with a reasoning cache",
    "validate": "run the validation loop of a config's model and data",
    "test": "run the test loop of a config's model and data",
    "predict": "run the prediction loop of a config's model and data",
    "eval": "evaluate a model on a benchmark: generate k samples, grade them, write a report",
    "judge": "grade a file of proofs with a judge and write the verdicts ('judge bench': against human grades)",
    "export": "write a Hugging Face model from a saved checkpoint",
    "data": "build datasets: distill, rubrics, filter, difficulty, decontaminate ('qed data <step> --help')",
}
DEBUG_FLAG, VERBOSE_FLAG = "--debug", "--verbose"

HELP = f"""usage: qed [--version] [{DEBUG_FLAG}] [{VERBOSE_FLAG}] <command> [options]

Post-training small open models to write Olympiad proofs (SFT, rubric-reward RL,
reasoning cache) on PyTorch Lightning.

commands:
{{commands}}

options:
  -h, --help   show this message and exit
  --version    print the version and exit
  {DEBUG_FLAG}      show the traceback of an error, not only its message (or QED_DEBUG=1)
  {VERBOSE_FLAG}    show every library's log lines and progress bars (or QED_VERBOSE=1)

`qed <command> --help` lists a command's options; `qed fit --config X --print_config`
prints a config with every default filled in. Any `qed fit` setting can also come from
an environment variable PL_FIT__<KEY> (e.g. PL_FIT__TRAINER__MAX_EPOCHS=3).
"""


def help_text() -> str:
    width = max(map(len, COMMANDS))
    return HELP.format(commands="\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def take_flags(argv: Sequence[str]) -> tuple[list[str], bool, bool]:
    """(arguments without ``--debug``/``--verbose``, debug, verbose); the flags may
    stand anywhere before a ``--``, and the environment variables count too."""
    end = argv.index("--") if "--" in argv else len(argv)
    head, tail = list(argv[:end]), list(argv[end:])
    debug = DEBUG_FLAG in head or _env_flag("QED_DEBUG")
    verbose = VERBOSE_FLAG in head or _env_flag("QED_VERBOSE")
    return [a for a in head if a not in (DEBUG_FLAG, VERBOSE_FLAG)] + tail, debug, verbose


def run_with_messages(command: str, fn: Callable[[], object], debug: bool) -> object:
    """Run ``fn``; a user error (``cli.errors``) becomes one message on stderr and exit status 2."""
    try:
        return fn()
    except Exception as err:
        if debug:
            raise
        from qed_lightning.cli.errors import user_error_message

        message = user_error_message(err)
        if message is None:
            raise
        print(f"{' '.join(['qed', command]).strip()}: error: {message}".rstrip(), file=sys.stderr)
        print(f"(add {DEBUG_FLAG} or set QED_DEBUG=1 to see the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def run_cli(args: Sequence[str] | None = None, run: bool = True):
    """``qed fit|validate|test|predict`` from Python (tests, notebooks): the LightningCLI."""
    from qed_lightning.cli.lightning_cli import run_cli as _run_cli

    return _run_cli(args, run=run)


SUBCOMMANDS = {"judge bench": "measure judges against human grades (agreement with bootstrap intervals, cost, "
                               "a report); --compare '[A,B]' compares two earlier runs"}


def _description(command: str) -> str:
    return f"qed {command}: {({**COMMANDS, **SUBCOMMANDS})[command]}"


def _function_cli(fn: Callable, args: Sequence[str], command: str, as_positional: bool):
    from jsonargparse import CLI, ArgumentParser

    from qed_lightning.cli.log_setup import adopt_library_loggers
    from qed_lightning.cli.nulls import NullSafeArgs

    adopt_library_loggers()
    parser_class = type("QedFunctionParser", (NullSafeArgs, ArgumentParser), {})
    return CLI(fn, args=list(args), as_positional=as_positional, parser_class=parser_class,
               prog=f"qed {command}", description=_description(command))


def _logged_to(fn: Callable, log_path: Callable[[dict], Path]) -> Callable:
    """``fn`` that first sends the log to ``log_path(its keyword arguments)``; the
    signature and docstring (the command's options) stay those of ``fn``."""
    from qed_lightning.cli.log_setup import attach_log_file, detach_log_file

    @functools.wraps(fn)
    def run(**kwargs):
        attach_log_file(log_path(kwargs))
        try:
            return fn(**kwargs)
        finally:
            detach_log_file()

    return run


def export_main(args: Sequence[str]) -> None:
    from qed_lightning.export import export_checkpoint

    out = _function_cli(export_checkpoint, args, "export", as_positional=True)
    print(f"exported to {out}")


def judge_main(args: Sequence[str]) -> None:
    if args and args[0] == "bench":
        from qed_lightning.judging.bench.run import judge_bench

        bench_log = lambda kw: Path(kw["output_dir"]) / "bench.log"  # noqa: E731 (beside report.md)
        _function_cli(_logged_to(judge_bench, bench_log), args[1:], "judge bench", as_positional=False)
        return
    from qed_lightning.judging.grade_file import grade_file

    output_log = lambda kw: Path(kw["output"]).with_suffix(".log")  # noqa: E731 (verdicts.jsonl -> verdicts.log)
    _function_cli(_logged_to(grade_file, output_log), args, "judge", as_positional=False)


def data_main(args: Sequence[str]) -> dict:
    """``qed data <step>``: one function per step, its options from its signature."""
    import importlib

    from qed_lightning.data_pipeline import SUBCOMMANDS as STEPS

    if not args or args[0] not in STEPS:
        width = max(map(len, STEPS))
        steps = "\n".join(f"  {name:<{width}}  {text}" for name, (_, _, text) in STEPS.items())
        given = f"unknown step {args[0]!r}; " if args and args[0] not in ("-h", "--help") else ""
        print(f"usage: qed data <step> [options]\n{given}steps:\n{steps}", file=sys.stderr if given else sys.stdout)
        if given or not args:
            raise SystemExit(2)
        return {}
    module, name, text = STEPS[args[0]]
    SUBCOMMANDS.setdefault(f"data {args[0]}", text)
    step_log = lambda kw: Path(kw["output_dir"]) / f"{args[0]}.log"  # noqa: E731 (beside summary.json)
    fn = getattr(importlib.import_module(module), name)
    return _function_cli(_logged_to(fn, step_log), args[1:], f"data {args[0]}", as_positional=False)


def eval_command(args: Sequence[str]) -> dict:
    """``qed eval`` without its printout: the summary ``evaluate`` returns."""
    from qed_lightning.cli.log_setup import LOG_FILE_NAME
    from qed_lightning.evaluation.runner import evaluate

    # beside report.md: evaluate() writes into <output_dir>/<benchmark>/<model_label>/
    report_log = lambda kw: Path(kw["output_dir"]) / kw["benchmark"] / kw["model_label"] / LOG_FILE_NAME  # noqa: E731
    return _function_cli(_logged_to(evaluate, report_log), args, "eval", as_positional=False)


def eval_main(args: Sequence[str]) -> dict:
    summary = eval_command(args)
    if summary.get("skipped_rows"):  # on_bad_row: skip left rows out: say so where the user looks
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.get("skipped_by_reason", {}).items()))
        print(f"skipped rows: {summary['skipped_rows']} ({reasons})")
    print(f"report: {summary['report']}")
    return summary


def _lightning_main(args: Sequence[str]) -> None:
    run_cli(list(args))


def _unknown(command: str) -> None:
    import difflib

    close = difflib.get_close_matches(command, COMMANDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    print(f"qed: error: unknown command '{command}'{hint}; the commands are {', '.join(COMMANDS)}."
          " `qed --help` lists them.", file=sys.stderr)
    raise SystemExit(2)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``qed``; pass ``args`` to call it from tests and notebooks."""
    argv, debug, verbose = take_flags(list(sys.argv[1:] if args is None else args))
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(), end="")
        return
    if argv[0] == "--version":
        print(f"qed_lightning {__version__}")
        return
    command = argv[0]
    if command in LIGHTNING_COMMANDS or command in ("-c", "--config"):  # LightningCLI's own top-level --config
        run, rest = _lightning_main, argv
    elif command in COMMANDS:
        run, rest = {"export": export_main, "judge": judge_main, "eval": eval_main,
                     "data": data_main}[command], argv[1:]
    else:
        _unknown(command)
    start(command if command in COMMANDS else "", lambda: run(rest), debug, verbose)


def start(command: str, fn: Callable[[], object], debug: bool, verbose: bool) -> object:
    """Set up logging (before anything heavy is imported), then run ``fn`` with user
    errors as messages: how ``qed`` and ``python -m qed_lightning.cli.demo`` run a command."""
    from qed_lightning.cli import log_setup

    log_setup.configure(verbose=verbose)
    return run_with_messages(command, fn, debug)


if __name__ == "__main__":
    main()
