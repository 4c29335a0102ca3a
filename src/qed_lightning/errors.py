"""The base class of errors that are the user's to fix (a data row, a file, a setting).

``qed`` prints such an error as its one message, with no traceback, and exits with
status 2 (``--debug`` or ``QED_DEBUG=1`` shows the traceback). An error class joins by
subclassing it next to its usual base, e.g. ``class DataSourceError(QedUserError,
ValueError)``, so code that catches ``ValueError`` keeps working. Anything else that
escapes a command is treated as a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["QedUserError"]


class QedUserError(Exception):
    """Bad input or a bad setting; the message names what (file, row, column, setting) and the fix."""
