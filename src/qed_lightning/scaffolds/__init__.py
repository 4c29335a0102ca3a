"""Test-time scaffolds: multi-call strategies (RSA, DSM, Nomos, self-check, best-of-n)
that spend more generation on a problem to return one better proof. ``qed eval
--mode=<name>`` runs one; ``base.py`` says how a scaffold is written, ``driver.py`` how
they run (stage-batched, replayed on resume, costed)."""
from __future__ import annotations

import importlib
import pkgutil

from qed_lightning.scaffolds.base import SCAFFOLDS, Scaffold, register_scaffold

__all__ = ["SCAFFOLDS", "Scaffold", "build_scaffold", "register_scaffold", "scaffold_names"]

_INFRASTRUCTURE = {"base", "call_store", "chat", "driver", "verdicts", "run"}


def _load_all() -> None:
    """Import every scaffold module of this package: a new scaffold is a new file."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def scaffold_names() -> list[str]:
    _load_all()
    return sorted(SCAFFOLDS)


def build_scaffold(name: str, **settings) -> Scaffold:
    """The scaffold registered as ``name`` at its reference settings (or ``settings``)."""
    _load_all()
    if name not in SCAFFOLDS:
        raise ValueError(f"unknown scaffold {name!r}; the scaffolds are {', '.join(sorted(SCAFFOLDS))}")
    return SCAFFOLDS[name](**settings)
