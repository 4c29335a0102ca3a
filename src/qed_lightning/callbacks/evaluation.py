"""``EvaluationCallback``: a small benchmark slice every n steps during SFT or RL.

An RL run evaluates with its own colocated engine, which holds the weights of the step
just taken; an SFT run generates with the training model itself through transformers
(slower, no second copy). Each rank evaluates its share of the slice; the logged
metrics come from the records of all ranks, read back from ``<log_dir>/eval/step_<s>/``
(so on several nodes the log directory must be shared, as for checkpoints).
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from qed_lightning.callbacks.preemption import preempted
from qed_lightning.contracts import SamplingSettings
from qed_lightning.judging.base import BaseJudge

__all__ = ["EvaluationCallback"]


class EvaluationCallback(pl.Callback):
    """Args:
        benchmark, source, categories, levels, ids, limit: The slice (see ``evaluate``).
        every_n_steps: Evaluate after every n-th optimizer step (and at the end of fit
            when ``at_end``).
        samples: k per problem.
        judge: The proof benchmarks' grader (answer benchmarks: optional fallback); None
            uses the RL module's own judge (an SFT run must set one for proof benchmarks).
        sampling: Sampling of the evaluation turns.
        mode: ``single`` or ``rc``; ``rc_iterations``: RC turns.
        answer_mode: ``after_think`` or ``whole``.
        at_end: Also evaluate when fit ends.
    """

    def __init__(self, benchmark: str = "demo", every_n_steps: int = 50, limit: int | None = 8,
                 source: str | None = None, categories: list[str] | None = None, levels: list[str] | None = None,
                 ids: list[str] | None = None, samples: int = 1, judge: BaseJudge | None = None,
                 sampling: SamplingSettings = SamplingSettings(temperature=0.8, top_p=1.0, max_tokens=1024),
                 mode: str = "single", rc_iterations: int = 3, answer_mode: str = "after_think",
                 at_end: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.benchmark, self.every_n_steps, self.limit, self.source = benchmark, every_n_steps, limit, source
        self.categories, self.levels, self.ids, self.samples, self.judge = categories, levels, ids, samples, judge
        self.sampling, self.mode, self.rc_iterations, self.answer_mode, self.at_end = (
            sampling, mode, rc_iterations, answer_mode, at_end)
        self.last_step: int | None = None
        self.history: list[tuple[int, dict]] = []

    def _policy(self, pl_module):
        from qed_lightning.evaluation.policies import EnginePolicy

        engine = getattr(pl_module, "engine", None)
        if engine is None:  # SFT: the training model itself
            from qed_lightning.engines.hf_engine import HFEngine

            # on the model's own device: HFEngine moves the model it is given
            engine = HFEngine(pl_module.policy, tokenizer=pl_module.tokenizer, device=str(pl_module.device))
        return EnginePolicy(sampling=self.sampling, engine=engine, tokenizer=pl_module.tokenizer)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from qed_lightning.evaluation.metrics import summarize_records
        from qed_lightning.evaluation.runner import evaluate
        from qed_lightning.evaluation.store import EvalStore

        step = trainer.global_step
        if self.last_step == step:
            return
        self.last_step = step
        root = Path(trainer.log_dir or trainer.default_root_dir) / "eval" / f"step_{step:06d}"
        was_training = pl_module.policy.training
        try:
            judge = self.judge if self.judge is not None else getattr(pl_module, "judge", None)
            evaluate(self._policy(pl_module), self.benchmark, source=self.source, categories=self.categories,
                     levels=self.levels, ids=self.ids, limit=self.limit, judge=judge, samples=self.samples,
                     mode=self.mode, rc_iterations=self.rc_iterations, answer_mode=self.answer_mode,
                     model_label=f"rank{trainer.global_rank}", output_dir=str(root), progress=False,
                     shard=(trainer.global_rank, trainer.world_size))
        finally:
            pl_module.policy.train(was_training)  # generation switched the model to eval mode
        trainer.strategy.barrier()
        records = [r for rank in range(trainer.world_size)
                   for r in EvalStore(root / self.benchmark / f"rank{rank}").records.values()]
        summary = summarize_records(records, self.samples)
        self.history.append((step, summary))
        metrics = {f"eval/{self.benchmark}/{k}": float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and v == v}  # NaN (nothing graded) is not logged
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # after a save inside the step (preemption), the step did not train: nothing to evaluate
        if trainer.global_step % self.every_n_steps == 0 and not preempted(trainer):
            self._evaluate(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.at_end and not preempted(trainer):  # the requeued start evaluates at its end
            self._evaluate(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_step = state_dict.get("last_step")

