"""The ``qed`` command (``commands``) and ``make demo`` (``demo``), with what they share:
the LightningCLI (``lightning_cli``), errors as messages (``errors``), ``null`` at any
depth (``nulls``) and the console and ``qed.log`` (``log_setup``).

Importing this package loads ``commands`` only, which imports no heavy dependency:
``qed --help`` answers without torch, Lightning or vLLM.
"""
from qed_lightning.cli.commands import COMMANDS, eval_command, main, run_cli, start, take_flags

__all__ = ["COMMANDS", "eval_command", "main", "run_cli", "start", "take_flags"]
