"""A failure one rank meets, raised on every rank.

A judge that went down, completions from stale weights, a batch whose every prompt is
too long: the rank that meets such an error raises it, while the other ranks go on to
the step's next collective and wait there until the process-group timeout, and the
job then dies of a timeout that names none of it. Around a phase of the step that can
fail on one rank, :func:`agree_on_failure` has the ranks exchange what happened (one
object all-gather) and, if any rank failed, every rank raises the same error, naming
the rank(s) that failed.

The exchange pairs up with the other ranks' next exchange, wherever that is: a rank
that fails early exchanges at once, and the others exchange at the end of the phase
or at a checkpoint inside it (:func:`exchange_failures` with no error). So every
collective a healthy rank makes inside such a phase must come after an exchange at
the same point (e.g. the preemption check between generation parts), or a failed rank
and a healthy one would wait in different collectives.
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable, TypeVar

__all__ = ["RankFailureError", "agree_on_failure", "exchange_failures"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_AGREED = "raised_on_every_rank"


class RankFailureError(RuntimeError):
    """A failure on some rank whose own error type cannot be rebuilt from a message."""


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _rebuild(module: str, qualname: str, message: str) -> BaseException:
    """The failed rank's error type with ``message`` where it takes one message (every
    rank runs the same code), else :class:`RankFailureError`."""
    try:
        kind = importlib.import_module(module)
        for part in qualname.split("."):
            kind = getattr(kind, part)
        if isinstance(kind, type) and issubclass(kind, Exception):
            return kind(message)
    except Exception:  # noqa: BLE001 - a custom __init__, a local class: the generic type says it
        pass
    return RankFailureError(message)


def exchange_failures(error: BaseException | None, where: str) -> None:
    """One collective on every rank: raises, on every rank, an error naming each rank
    that brought one (the first such rank's error type), or returns if none did. On
    one process it raises ``error`` itself."""
    rank, world = _world()
    if world == 1:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    mine = None if error is None else (type(error).__module__, type(error).__qualname__,
                                       f"{type(error).__name__}: {error}")
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mine)
    failed = [(r, f) for r, f in enumerate(gathered) if f is not None]
    if not failed:
        return
    message = f"{where}: " + "; ".join(f"rank {r} failed: {text}" for r, (_, _, text) in failed)
    agreed = _rebuild(failed[0][1][0], failed[0][1][1], message)
    setattr(agreed, _AGREED, True)
    raise agreed from error


def agree_on_failure(phase: Callable[[], T], where: str,
                     agreed: tuple[type[BaseException], ...] = ()) -> T:
    """``phase()``, then one exchange (:func:`exchange_failures`) on every rank: its
    result if no rank failed, else the same error on every rank.

    ``agreed``: exception types every rank raises together (decided by a collective,
    e.g. a stop for a preemption); they pass through without an exchange, as does an
    error already raised on every rank by an exchange inside the phase.
    """
    try:
        result = phase()
    except agreed:
        raise
    except Exception as error:
        if getattr(error, _AGREED, False):
            raise
        rank, world = _world()
        if world > 1:  # logged now: the other ranks may take a while to reach the exchange
            log.error("rank %d: %s failed; every rank stops at their next exchange", rank, where, exc_info=error)
        exchange_failures(error, where)
        raise  # not reached: the exchange raised
    exchange_failures(None, where)
    return result
