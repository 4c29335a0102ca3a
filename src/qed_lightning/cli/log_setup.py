"""Logging of the ``qed`` command: the project's lines on the console, the libraries' on file.

The console (stderr) shows this package's own log lines (INFO and up) and, from the
libraries (vLLM, Lightning, transformers, Python warnings), each distinct WARNING or worse
once: vLLM's per-layer or per-call repeats of one message are shown the first time only,
Python warnings as one line each.
The run's log file (``qed.log`` in the run's directory, see :func:`attach_log_file`)
gets every line at INFO and up, repeats included, also those written before the
directory was known. ``verbose`` (``qed --verbose`` or ``QED_VERBOSE=1``) shows every
line on the console as well, and keeps transformers' loading and saving bars.

Only :func:`configure` changes anything, and it leaves logging alone when the program
already configured it (a handler on the root logger: pytest, an application embedding qed).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

__all__ = ["LOG_FILE_NAME", "adopt_library_loggers", "attach_log_file", "configure", "detach_log_file", "quiet"]

LOG_FILE_NAME = "qed.log"
PROJECT_LOGGERS = ("qed_lightning", "__main__")
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Environment read by the libraries when they load (before any of them is imported).
QUIET_ENV = {
    "VLLM_CONFIGURE_LOGGING": "0",  # vLLM's records reach the root logger instead of its own stdout handler
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10's own stderr lines ("[W... utils.cpp] Warning: NUMA binding ...")
}
VERBOSE_ENV = {"VLLM_CONFIGURE_LOGGING": "0"}

_state: dict = {}


# The whole package (src/qed_lightning/), not only this module's cli/ folder.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _is_project(record: logging.LogRecord) -> bool:
    # Also the project's lines logged through a library's helper that reports its
    # caller's place, e.g. Lightning's rank_zero_info (logger "lightning.pytorch...").
    # (Python warnings are logged from this module, so they would pass for the project's.)
    if record.name == "py.warnings":
        return False
    return record.name.split(".", 1)[0] in PROJECT_LOGGERS or record.pathname.startswith(_PACKAGE_DIR)


class ConsoleFilter(logging.Filter):
    """The project's lines at the handler's level; a library's line only at WARNING or
    above and only the first time its message (template) is seen."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_project(record):
            return True
        if record.levelno < logging.WARNING:
            return False
        # The message template: a per-layer "Attempted to load weight %s ..." is one message;
        # a Python warning is its category and text, wherever it was raised.
        key = (record.name, getattr(record, "warning", None) or str(record.msg))
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        return True


class ConsoleFormatter(logging.Formatter):
    """The project's lines as they are; a library's with its level and logger name."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if _is_project(record) and record.levelno < logging.WARNING:
            return message
        if record.name == "py.warnings":  # "Category: text (file:line)"
            return message
        return f"{record.levelname} {record.name}: {message}"


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` that logs one line to ``py.warnings`` (Python's own
    capture logs the source line too, and its text differs by place of the call)."""
    if file is not None:  # the caller asked for a stream of its own
        _state["showwarning"](message, category, filename, lineno, file, line)
        return
    text = f"{category.__name__}: {message}"
    where = str(filename).split("site-packages/")[-1]
    logging.getLogger("py.warnings").warning("%s (%s:%s)", text, where, lineno, extra={"warning": text})


class PendingFileHandler(logging.Handler):
    """Holds records until the run's log file is known, then writes them there and
    everything after. Without a file, at most ``capacity`` records are kept."""

    def __init__(self, capacity: int = 20000) -> None:
        super().__init__(logging.INFO)
        self.capacity = capacity
        self.pending: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None
        self.setFormatter(logging.Formatter(FILE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is not None:
            self.file.emit(record)
        elif len(self.pending) < self.capacity:
            self.pending.append(record)

    def open(self, path: Path) -> None:
        self.acquire()
        try:
            if self.file is not None and Path(self.file.baseFilename) == path.resolve():
                return
            if self.file is not None:
                self.file.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = logging.FileHandler(path, encoding="utf-8")
            self.file.setFormatter(self.formatter)
            for record in self.pending:
                self.file.emit(record)
            self.pending.clear()
        finally:
            self.release()

    def close_file(self) -> None:
        """Stop writing to the file; records are held again until the next ``open``."""
        self.acquire()
        try:
            if self.file is not None:
                self.file.close()
            self.file = None
        finally:
            self.release()

    def close(self) -> None:
        self.close_file()
        super().close()


def configure(verbose: bool = False, stream=None) -> bool:
    """Set up the console and the pending log file; True if done, False if logging was
    already configured by the program (then nothing changes). Call before torch,
    Lightning or vLLM is imported: some of them read the environment set here on import."""
    root = logging.getLogger()
    if _state.get("console") is None and root.handlers:
        return False
    for key, value in (VERBOSE_ENV if verbose else QUIET_ENV).items():
        os.environ.setdefault(key, value)
    if _state.get("console") is not None:
        root.removeHandler(_state["console"])
    console = logging.StreamHandler(sys.stderr if stream is None else stream)
    console.setLevel(logging.INFO)
    console.setFormatter(ConsoleFormatter())
    if not verbose:
        console.addFilter(ConsoleFilter())
    pending = _state.get("file") or PendingFileHandler()
    root.addHandler(console)
    if pending not in root.handlers:
        root.addHandler(pending)
    root.setLevel(logging.INFO)
    import warnings

    if warnings.showwarning is not _log_warning:
        _state["showwarning"] = warnings.showwarning
        warnings.showwarning = _log_warning
    _state.update(console=console, file=pending, verbose=verbose)
    return True


# Libraries that give their logger a console handler of their own when imported.
OWN_HANDLER_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")


def quiet() -> bool:
    """Whether ``qed`` set up logging without ``verbose``: libraries' output belongs in the log file."""
    return _state.get("console") is not None and not _state.get("verbose")


def adopt_library_loggers() -> None:
    """Send the records of libraries that keep their own console handler (Lightning,
    transformers) through the root logger's handlers instead; call after importing them."""
    if _state.get("console") is None:
        return
    for name in OWN_HANDLER_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        if not _state.get("verbose") and hasattr(hf_logging, "set_tqdm_hook"):
            # transformers' own bars ("Loading weights", "Writing model shards"); downloads
            # from the hub keep theirs.
            hf_logging.set_tqdm_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))


def detach_log_file() -> None:
    """Close the run's log file (its run is over); what follows waits for the next one,
    e.g. the next stage of ``python -m qed_lightning.cli.demo``."""
    pending: PendingFileHandler | None = _state.get("file")
    if pending is not None:
        pending.close_file()


def attach_log_file(path: str | Path) -> Path | None:
    """Write the log to ``path`` from now on, with what was logged before; a no-op
    (None) unless :func:`configure` set up logging."""
    pending: PendingFileHandler | None = _state.get("file")
    if pending is None:
        return None
    path = Path(path)
    pending.open(path)
    return path
