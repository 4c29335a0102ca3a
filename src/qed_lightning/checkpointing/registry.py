"""One place that decides what a checkpoint holds beyond model and optimizer.

Each component that has resumable state (data stream position, RNG, reasoning-cache
pool, judge cache reference) registers itself under a name; the module writes the
whole registry into ``checkpoint["qed_state"]`` and restores it by the same names,
so a checkpoint that lacks a component (or carries an unknown one) is an error that
names it instead of a silent partial resume."""
from __future__ import annotations

import random
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

CHECKPOINT_KEY = "qed_state"


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CheckpointRegistry:
    """Named resumable components; ``state_dict``/``load_state_dict`` over all of them."""

    def __init__(self) -> None:
        self._components: dict[str, Stateful] = {}

    def register(self, name: str, component: Stateful) -> None:
        if not isinstance(component, Stateful):
            raise TypeError(f"checkpoint component {name!r} needs state_dict() and load_state_dict()")
        if name in self._components and self._components[name] is not component:
            raise ValueError(f"checkpoint component {name!r} is already registered")
        self._components[name] = component

    @property
    def names(self) -> list[str]:
        return sorted(self._components)

    def state_dict(self) -> dict[str, Any]:
        return {name: comp.state_dict() for name, comp in self._components.items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        missing = sorted(set(self._components) - set(state))
        unexpected = sorted(set(state) - set(self._components))
        if strict and (missing or unexpected):
            raise KeyError(
                f"checkpoint state does not match this run: missing {missing}, unexpected {unexpected}"
            )
        for name, comp in self._components.items():
            if name in state:
                comp.load_state_dict(state[name])


class RNGState:
    """Python, numpy and torch (CPU and CUDA) generator states."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # Plain Python and torch values only, so checkpoints load with weights_only=True.
        state = {
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
