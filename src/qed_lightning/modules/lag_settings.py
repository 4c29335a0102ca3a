"""What a lagged RL run (``max_lag`` > 0) refuses or warns about, and where it finds
the problems of the steps ahead."""
from __future__ import annotations

import inspect
import warnings

from qed_lightning.contracts import Problem, SamplingSettings
from qed_lightning.engines.build import ENGINES_ELSEWHERE
from qed_lightning.rollouts.datamodule import problems_for_step

__all__ = ["LagWarning", "check_background_judge", "check_lag_settings", "check_schedule", "clip_eps",
           "problems_ahead"]


class LagWarning(UserWarning):
    """A lagged run's setting that silently biases or stalls learning."""


def clip_eps(loss_fn, loss_args: dict) -> dict[str, float]:
    """The loss's clip settings (``eps``, ``eps_low``, ``eps_high``) as this run sets them."""
    defaults = {name: p.default for name, p in inspect.signature(loss_fn).parameters.items()
                if name in ("eps", "eps_low", "eps_high") and p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: float(v) for k, v in loss_args.items() if k in ("eps", "eps_low", "eps_high")}}


def check_lag_settings(sampling: SamplingSettings, mismatch_correction: str, loss_fn, loss_args: dict,
                       reasoning_cache: bool) -> None:
    """Refuses sampling the trainer's log-probs cannot match, and warns on the PPO ratio
    against stale log-probs with a narrow clip (its gradient vanishes for every
    positive-advantage token whose probability drifted past 1 + eps)."""
    if reasoning_cache:
        raise ValueError("max_lag > 0 is not supported with the reasoning cache (its states are built with the "
                         "current policy at each step); set max_lag: 0")
    if sampling.top_p < 1.0 or (sampling.top_k is not None and sampling.top_k > 0):
        raise ValueError(f"max_lag > 0 needs sampling.top_p 1.0 and no sampling.top_k (got top_p {sampling.top_p}, "
                         f"top_k {sampling.top_k}): the engine's log-probs would be renormalised over the truncated "
                         "support while the trainer's cover the whole vocabulary, and the importance weights that "
                         "correct the lag would be biased")
    if mismatch_correction == "ratio":
        narrow = {k: v for k, v in clip_eps(loss_fn, loss_args).items() if v < 1.0}
        if narrow:
            warnings.warn(f"max_lag > 0 with mismatch_correction 'ratio' and clip {narrow}: the ratio to the "
                          "stale engine log-probs is clipped at 1 + eps, which zeroes the gradient of every "
                          "positive-advantage token that drifted further; use mismatch_correction 'tis' (the "
                          "default under lag) or a wide clip (qed_nano's eps 4)", LagWarning, stacklevel=4)


def check_background_judge(judge, setting: str) -> None:
    """Refuses grading in a background thread with an in-process vLLM grader: it would
    run beside the policy's engine in this process (vLLM engines in one process share
    process-wide state, and on CUDA the device)."""
    client = getattr(judge, "client", None)
    if type(client).__module__ == "qed_lightning.judging.engine_client":
        raise ValueError(f"{setting} grades in a background thread while the policy's engine generates; an "
                         f"in-process vLLM grader ({type(client).__name__}) cannot run beside it: serve the grader "
                         "(OpenAICompatibleClient on a vllm serve) or turn the setting off")


def check_schedule(max_lag: int, judge_overlap: bool, rollout_chunks: int, sampling: SamplingSettings,
                   mismatch_correction: str, loss_fn, loss_args: dict, reasoning_cache: bool, judge,
                   background_generation: bool = False, engine_backend: str = "vllm") -> None:
    """The RL step's overlap settings (``max_lag``, ``judge_overlap``,
    ``background_generation``) against each other and the rest of the run's, checked
    once when the module is built."""
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    if background_generation and max_lag < 1:
        raise ValueError("background_generation generates the batches of later steps while the trainer trains: "
                         "it needs max_lag >= 1 (with max_lag 0 each batch needs the weights of the step before)")
    if background_generation and engine_backend not in ENGINES_ELSEWHERE:
        raise ValueError(f"background_generation needs an engine that runs elsewhere (engine.backend one of "
                         f"{sorted(ENGINES_ELSEWHERE)}); engine.backend {engine_backend!r} shares the trainer's "
                         "device and sleeps while it trains")
    if judge_overlap and reasoning_cache:
        raise ValueError("judge_overlap is for plain rollouts; the reasoning cache generates in one part")
    if judge_overlap and max_lag > 0:
        raise ValueError("judge_overlap is for max_lag 0: with max_lag > 0 every batch is already graded in the "
                         "background while the next generates")
    if judge_overlap and rollout_chunks < 2:
        raise ValueError(f"judge_overlap grades one part while the next generates: set rollout_chunks >= 2 "
                         f"(got {rollout_chunks})")
    if max_lag > 0:
        check_lag_settings(sampling, mismatch_correction, loss_fn, loss_args, reasoning_cache)
        check_background_judge(judge, "max_lag > 0")
    if judge_overlap:
        check_background_judge(judge, "judge_overlap")


def problems_ahead(trainer, step: int) -> list[Problem]:
    """This rank's problems of ``step``, as the rollout data module will yield them."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not all(hasattr(dm, a) for a in ("problems", "prompts_per_step", "seed")):
        raise ValueError("max_lag > 0 generates the batches of later steps ahead of the data loader: it needs "
                         "qed_lightning.rollouts.RolloutDataModule (or a data module with problems, "
                         "prompts_per_step and seed) as the trainer's datamodule")
    batch = problems_for_step(dm.problems, step, dm.prompts_per_step, dm.seed)
    return batch[trainer.global_rank::trainer.world_size]
