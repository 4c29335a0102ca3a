"""Which errors ``qed`` prints as one message and which keep their traceback.

A user error is one of:

* a :class:`~qed_lightning.errors.QedUserError` (bad data, a bad setting), anywhere;
* a ``ValueError`` raised by a ``raise`` statement in this package's own code (its
  validation of settings and inputs, whose messages name what to fix), or a missing
  file or directory, as long as it happens while a command sets up: before Lightning's
  fit/validate/test/predict loop starts. Inside that loop they are treated as bugs.

Everything else (a ``KeyError``, a ``ValueError`` from a library or from Python itself,
e.g. ``int("x")`` in our code) is a bug and keeps its traceback.
"""
from __future__ import annotations

import dis
from types import TracebackType

from qed_lightning.errors import QedUserError

__all__ = ["user_error_message"]

_PACKAGE = __name__.split(".", 1)[0]  # the whole package (qed_lightning), not only cli/
_MISSING_PATH = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
# Lightning's Trainer runs its loop in ``_run_stage``; setup (data, model, strategy) comes before.
_LOOP_FRAME = ("lightning.pytorch.trainer.trainer", "_run_stage")


def _frames(tb: TracebackType | None):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _in_loop(err: BaseException) -> bool:
    return any((tb.tb_frame.f_globals.get("__name__"), tb.tb_frame.f_code.co_name) == _LOOP_FRAME
               for tb in _frames(err.__traceback__))


def _raised_here(err: BaseException) -> bool:
    """Whether the innermost frame is this package's code executing a ``raise`` statement."""
    last = None
    for last in _frames(err.__traceback__):
        pass
    if last is None or not str(last.tb_frame.f_globals.get("__name__", "")).startswith(_PACKAGE + "."):
        return False
    op = next((i.opname for i in dis.get_instructions(last.tb_frame.f_code) if i.offset == last.tb_lasti), None)
    return op == "RAISE_VARARGS"


def user_error_message(err: BaseException) -> str | None:
    """The one message to print for an error the user can fix, or None for a bug."""
    if isinstance(err, QedUserError):
        return str(err)
    if _in_loop(err):
        return None
    if isinstance(err, _MISSING_PATH):
        return str(err)
    if isinstance(err, ValueError) and str(err) and _raised_here(err):
        return str(err)
    return None
