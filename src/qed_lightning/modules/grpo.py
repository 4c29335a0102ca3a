"""GRPOModule: RL with rubric rewards, one rollout batch per optimizer step.

A step: sample ``sampling.n`` completions for each of this step's problems with the
weights of the previous step (on-policy), grade them, compute advantages, pack the
counted samples into micro-batches by token budget, accumulate the policy loss's
gradients over them (normalisers global over the step), clip, step, and push the
new weights into the engine. Log-probs come from a chunked pass over the LM head at
the sampling temperature, so ``[B, T, V]`` logits are never kept for backward.
"""
from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from qed_lightning.checkpointing.judge_cache_ref import JudgeCacheReference
from qed_lightning.checkpointing.registry import CHECKPOINT_KEY, CheckpointRegistry, RNGState
from qed_lightning.contracts import SamplingSettings
from qed_lightning.engines.build import ENGINES_ELSEWHERE, EngineContext, build_engine
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.client import CompletionClient
from qed_lightning.losses.advantages import get_advantage, training_mask
from qed_lightning.losses.policy import StepNorms
from qed_lightning.models import load_policy, load_tokenizer, resolve_model_path
from qed_lightning.modules.collective_steps import check_step_strategy, clip_grad_norm
from qed_lightning.modules.lag_settings import check_schedule
from qed_lightning.modules.lagged_rollouts import LaggedRollouts
from qed_lightning.modules.lagged_step import take_lagged_batch
from qed_lightning.modules.preemptible_rollouts import step_rollouts
from qed_lightning.modules.micro_batch_loss import MicroBatchLoss
from qed_lightning.modules.sharding import RootForward, shard_model
from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
from qed_lightning.modules.rl_step_log import log_rl_step
from qed_lightning.modules.step_backward import accumulate_micro_batches, empty_totals, reduce_totals
from qed_lightning.modules.weight_push import drain_before_push, push_weights
from qed_lightning.optim import build_optimizer, build_scheduler
from qed_lightning.optim.precision_guard import check_update_resolution
from qed_lightning.reasoning_cache.producer import ReasoningCacheProducer, ReasoningCacheSettings
from qed_lightning.rollouts.datamodule import ProblemBatch
from qed_lightning.rollouts.microbatch import pack_rollouts
from qed_lightning.rollouts.pending import PendingRollouts
from qed_lightning.rollouts.producer import RolloutProducer
from qed_lightning.rollouts.prompts import PROOF_PROMPT
from qed_lightning.rollouts.records import RolloutRecorder
from qed_lightning.seeding import run_seed

__all__ = ["GRPOModule"]


class GRPOModule(pl.LightningModule):
    """RL on proofs graded by a judge.

    Args:
        model: Policy: alias, directory or hub id (the SFT export for the paper's run).
        revision: Hub revision of the policy.
        dtype: Trainer weights dtype.
        judge: The reward judge (``LLMJudge``, ``RuleJudge``); its ``on_failure``
            decides whether failed gradings are zero-reward or masked out.
        engine: Rollout engine settings.
        sampling: Group size ``n``, temperature, top_p, top_k, max_tokens, stop.
        prompt_template: Rollout prompt around ``{problem}``.
        loss: Policy loss name (``qed_nano``, ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``cispo``).
        loss_args: Overrides of the loss's settings (``eps``, ``entropy_coef``...).
        loss_backend: ``torch`` (the chunked log-prob pass + the loss function) or
            ``liger`` (Liger's fused linear GRPO loss, for the losses it computes equally:
            see ``losses/liger.py``; no entropy bonus). Liger's path adds a no-grad
            log-prob pass for the metrics, the log-prob gap and ``tis``.
        kl_coef: beta of a per-token KL(pi || reference) penalty (k3 estimator). 0 (the
            paper) loads no reference; > 0 loads a frozen copy of ``reference_model``.
        reference_model: The KL reference (None: the policy's initial weights, i.e.
            ``model`` at ``revision``). It is a submodule, so the strategy places it like
            the policy; it is frozen, in eval mode, and left out of checkpoints.
        advantage: ``group_mean`` (paper), ``group_std``, ``batch_std`` or ``rloo``.
        filter_zero_advantage_groups: Leave out groups whose rewards are all equal.
        overlong_filtering: Leave out completions that hit max_tokens without EOS.
        mismatch_correction: ``ratio`` (the paper: old log-probs are the engine's, so the
            PPO ratio itself corrects the engine/trainer mismatch) or ``tis`` (old log-probs
            are the trainer's, detached, and each token's advantage is weighted by the
            truncated importance weight min(pi_trainer / pi_engine, ``tis_cap``)). Never both.
            None: ``ratio`` on-policy, ``tis`` with ``max_lag`` > 0 (with one optimizer step
            per batch the trainer's weights are the proximal policy: AReaL's decoupled
            objective, which corrects staleness and engine mismatch together).
        tis_cap: Cap of the truncated importance weight.
        micro_batch_tokens: Tokens per packed micro-batch (>= longest prompt + max_tokens).
        logprob_chunk_size: Rows per chunk of the LM-head pass.
        optimizer, lr, weight_decay, betas, lr_schedule, warmup_ratio: The optimizer
            (paper: AdamW, 1e-6, 0.01, constant).
        max_grad_norm: Gradient-norm clip (paper: 0.3; 0 disables).
        gradient_checkpointing: Recompute activations in backward.
        attn_implementation: transformers' attention kernel for the trainer's model; None: flash
            attention on CUDA when installed (packed rows need it to stay fast), else the default.
        seed: Sampling seed: per-sample sampling seeds (and RC's state picks) derive from
            it. None: the run's ``seed_everything``, so one seed drives the run.
        on_long_prompt: ``skip`` (count) or ``error`` for prompts that cannot fit max_tokens.
        max_consecutive_skips: Skipped steps in a row (non-finite gradients, nothing to
            learn from) before the run stops.
        records: Rollout record settings.
        rollout_chunks: Generate and grade each step's problems in this many parts; a
            preemption signal is checked between parts, and the finished groups are saved
            with the checkpoint, so a generation longer than the signal's lead still ends
            in a save that keeps most of it. 1: one engine call per step (RC: always one).
            The judge grades each part in its own call, so its ``max_failed_batches``
            counts parts.
        max_lag: Train step t on a batch generated up to this many weight versions
            earlier (``modules/lagged_rollouts.py``): the judge grades batch t while the
            engine generates batch t+1. 0 (default): on-policy. > 0 refuses top_p < 1 and
            top_k (the engine's log-probs would be of a truncated distribution the
            trainer's are not) and the reasoning cache, and warns on ``ratio`` with a clip
            eps < 1 (drifted tokens would lose their gradient).
        background_generation: With ``max_lag`` > 0, generate the batches ahead in a
            background thread while the trainer trains (``modules/lagged_rollouts.py``):
            only for engines that run elsewhere (``engine.backend: served``). Every push
            waits for the servers to drain first. None: on for a served engine with
            ``max_lag`` > 0. Same samples and weights as with it off; only the waiting moves.
        judge_overlap: Grade each rollout part in a background thread while the engine
            generates the next (needs ``rollout_chunks`` >= 2; not with the reasoning
            cache). Same samples, rewards and weights as without it; pays when the judge
            runs elsewhere (an HTTP grader) and its time is comparable to generation's.
        reasoning_cache: RC training (``ReasoningCacheSettings``): each step's groups are
            sampled on (problem, summary) states built by reason -> summarize cycles with
            the current policy. None: plain single-turn rollouts.
        summarizer: RC's frozen summarizer (a ``CompletionClient``: an in-process vLLM
            client or a ``vllm serve`` over HTTP); None: the policy summarizes itself.
    """

    def __init__(
        self,
        model: str = "tiny",
        judge: BaseJudge | None = None,
        revision: str | None = None,
        dtype: str = "float32",
        engine: EngineSettings = EngineSettings(),
        sampling: SamplingSettings = SamplingSettings(temperature=0.8, max_tokens=1024, n=16),
        prompt_template: str = PROOF_PROMPT,
        loss: str = "qed_nano",
        loss_args: dict | None = None,
        loss_backend: str = "torch",
        kl_coef: float = 0.0,
        reference_model: str | None = None,
        advantage: str = "group_mean",
        filter_zero_advantage_groups: bool = False,
        overlong_filtering: bool = False,
        mismatch_correction: str | None = None,
        tis_cap: float = 2.0,
        micro_batch_tokens: int = 8192,
        logprob_chunk_size: int = 256,
        optimizer: str = "adamw",
        lr: float = 1e-6,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str = "constant",
        warmup_ratio: float = 0.0,
        max_grad_norm: float = 0.3,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        seed: int | None = None,
        on_long_prompt: str = "skip",
        max_consecutive_skips: int = 5,
        records: RecordSettings = RecordSettings(),
        rollout_chunks: int = 1,
        judge_overlap: bool = False,
        max_lag: int = 0,
        background_generation: bool | None = None,
        reasoning_cache: ReasoningCacheSettings | None = None,
        summarizer: CompletionClient | None = None,
    ) -> None:
        super().__init__()
        if judge is None:
            raise ValueError("GRPOModule needs a judge (model.judge: class_path ... in the config)")
        if mismatch_correction not in (None, "ratio", "tis"):
            raise ValueError(f"mismatch_correction must be 'ratio' or 'tis', got {mismatch_correction!r}")
        self.save_hyperparameters(ignore=["judge", "summarizer"])
        self.hparams.seed = run_seed(seed)  # resolved now: checkpoints and logs record the seed used
        if mismatch_correction is None:  # resolved now too: the logs say which correction ran
            self.hparams.mismatch_correction = "tis" if max_lag > 0 else "ratio"
        # nested settings may arrive as dicts (from a config) or as the dataclasses
        self.engine_settings = engine if isinstance(engine, EngineSettings) else EngineSettings(**engine)
        if background_generation is None:
            self.hparams.background_generation = max_lag > 0 and self.engine_settings.backend in ENGINES_ELSEWHERE
        self.sampling = sampling if isinstance(sampling, SamplingSettings) else SamplingSettings(**sampling)
        self.record_settings = records if isinstance(records, RecordSettings) else RecordSettings(**records)
        self.rc_settings = (reasoning_cache if reasoning_cache is None or isinstance(reasoning_cache, ReasoningCacheSettings)
                            else ReasoningCacheSettings(**reasoning_cache))
        if summarizer is not None and self.rc_settings is None:
            raise ValueError("a summarizer is set but reasoning_cache is not: set model.reasoning_cache")
        self.summarizer = summarizer
        if self.sampling.temperature <= 0:
            raise ValueError("RL samples at a temperature > 0 (the trainer's log-probs divide by it)")
        self.automatic_optimization = False
        self.judge = judge
        self.micro_batch_loss = MicroBatchLoss(loss, loss_args or {}, loss_backend, self.hparams.mismatch_correction,
                                               tis_cap, kl_coef, self.sampling.temperature, logprob_chunk_size)
        check_schedule(max_lag, judge_overlap, rollout_chunks, self.sampling, self.hparams.mismatch_correction,
                       self.micro_batch_loss.loss_fn, self.micro_batch_loss.loss_args, self.rc_settings is not None,
                       judge, self.hparams.background_generation, self.engine_settings.backend)
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.advantage_fn = get_advantage(advantage)
        self.model_path = resolve_model_path(model)
        self.tokenizer = load_tokenizer(model, revision)
        self.policy: torch.nn.Module | None = None
        self.reference: torch.nn.Module | None = None
        self.engine = None
        self.producer: RolloutProducer | ReasoningCacheProducer | None = None
        self.checkpoint_state = CheckpointRegistry()
        self.checkpoint_state.register("rng", RNGState())
        self.pending_rollouts = PendingRollouts()
        self.checkpoint_state.register("pending_rollouts", self.pending_rollouts)
        self.lagged: LaggedRollouts | None = None  # max_lag > 0: built with the producer
        self._recorder: RolloutRecorder | None = None
        self._skips_in_a_row = 0

    # ------------------------------------------------------------------ setup

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        hp = self.hparams
        policy = load_policy(hp.model, hp.revision, hp.dtype, hp.attn_implementation)
        if hp.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
        self.policy = policy.train()
        # Not registered as submodules (checkpoint keys stay policy.* / reference.*):
        # the FSDP2 root units whose forward runs each loss (see modules/sharding.py).
        self.__dict__["_policy_root"] = RootForward(self.policy)
        # a mesh exists only under a trainer's ModelParallelStrategy; bf16-mixed gathers bf16, reduces fp32
        precision = self.trainer.precision if self.device_mesh is not None else None
        shard_model(self.policy, self.device_mesh, root=self._policy_root, precision=precision)
        if hp.kl_coef > 0:
            ref_name = hp.reference_model or hp.model
            reference = load_policy(ref_name, hp.revision if hp.reference_model is None else None, hp.dtype,
                                    hp.attn_implementation)
            reference.config.use_cache = False
            # sharded like the policy: under FSDP each rank holds a shard of it too
            self.reference = reference.eval().requires_grad_(False)
            self.__dict__["_reference_root"] = RootForward(self.reference)
            shard_model(self.reference, self.device_mesh, root=self._reference_root, precision=precision)

    def setup(self, stage: str) -> None:
        # Before configure_optimizers: on CUDA the engine takes its memory first.
        if stage != "fit" or self.engine is not None:
            return
        hp, trainer = self.hparams, self.trainer
        self.engine = build_engine(self.engine_settings, EngineContext(
            self.model_path, hp.dtype, hp.seed, str(trainer.default_root_dir), self.global_rank, self.local_rank,
            trainer.world_size, trainer.num_devices))
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        rec = self.record_settings
        recorder = RolloutRecorder(log_dir / "rollouts", rec.every_n_steps, rec.max_groups, rec.max_chars,
                                   rank=self.global_rank if self.trainer.world_size > 1 else None)
        self._recorder = recorder
        self.producer = RolloutProducer(self.engine, self.judge, self.tokenizer, self.sampling, hp.prompt_template,
                                        hp.seed, hp.on_long_prompt, recorder,
                                        chunks=hp.rollout_chunks if self.rc_settings is None else 1,
                                        judge_overlap=hp.judge_overlap)
        if hp.max_lag > 0:
            self.lagged = LaggedRollouts(self.producer, hp.max_lag, background=hp.background_generation)
            self.checkpoint_state.register("lagged_rollouts", self.lagged)
        if self.rc_settings is not None:
            self.producer = ReasoningCacheProducer(self.producer, self.rc_settings, self.summarizer, seed=hp.seed)
            self.checkpoint_state.register("reasoning_cache", self.producer)
        if hasattr(self.judge, "cache_reference"):
            self.checkpoint_state.register("judge_cache", JudgeCacheReference(self.judge))

    def configure_optimizers(self):
        hp = self.hparams
        # bf16 weights stepped in place at an lr they cannot resolve: refused (optim.precision_guard)
        check_update_resolution(self.policy.parameters(), optimizer=hp.optimizer, lr=hp.lr, model_dtype=hp.dtype,
                                precision=self.trainer.precision, reduce=self._sum_tensor)
        opt = build_optimizer(hp.optimizer, self.policy.parameters(), lr=hp.lr, weight_decay=hp.weight_decay,
                              betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = build_scheduler(hp.lr_schedule, opt, total_steps=total, warmup_ratio=hp.warmup_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        check_step_strategy(self.trainer.strategy)  # once, before any backward: every rank refuses together

    def on_train_start(self) -> None:
        # After a resume has restored weights and the step count: the engine starts
        # from exactly the trainer's weights, stamped with this step.
        self._push_weights()

    def _push_weights(self) -> None:
        push_weights(self)

    # ------------------------------------------------------------------ step

    def _sum(self, value: float) -> float:
        # float64: a step's token count (up to 1024 x 49,152 ~ 5e7) is not exact in float32 above 2^24
        return float(self._sum_tensor(torch.tensor(float(value), dtype=torch.float64)))

    def _sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (identity on one process)."""
        if self.trainer.world_size == 1:
            return t
        return self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").to(t.device)

    def training_step(self, batch: ProblemBatch, batch_idx: int):
        hp = self.hparams
        step, t0 = self.global_step, time.perf_counter()
        if self.lagged is not None:
            rollouts, from_saved = take_lagged_batch(self, batch.problems, step)
        else:
            rollouts, from_saved = step_rollouts(self.trainer, self.producer, self.pending_rollouts, batch.problems,
                                                 step)
            if rollouts is None:  # saved for a preemption: this step trains after the requeue
                return None
        self.engine.sleep()
        t_rollout = time.perf_counter() - t0

        valid = rollouts.reward_mask
        adv = self.advantage_fn(rollouts.rewards, rollouts.group_ids, valid, reduce=self._sum_tensor)  # [N]
        keep = training_mask(valid, rollouts.truncated, adv, rollouts.group_ids, hp.overlong_filtering,
                             hp.filter_zero_advantage_groups)  # [N]
        seq_lengths = torch.where(keep, rollouts.completion_mask.sum(1), 0)  # [N]
        norms = StepNorms(samples=int(self._sum(rollouts.num_samples)), tokens=int(self._sum(seq_lengths.sum())),
                          max_tokens=self.sampling.max_tokens, seq_lengths=seq_lengths,
                          world_size=self.trainer.world_size)
        # Any rank with something to learn makes the step learnable on every rank.
        learnable = self.trainer.strategy.reduce_boolean_decision(bool(((adv != 0) & keep).any()), all=False)

        t1 = time.perf_counter()
        opt, sched = self.optimizers(), self.lr_schedulers()
        totals = empty_totals()
        if learnable:
            micro_batches = pack_rollouts(rollouts, adv, keep, hp.micro_batch_tokens, self.producer.pad_id)
            self._accumulate(micro_batches, norms, totals)
        totals = reduce_totals(totals, self.trainer.world_size, self._sum_tensor, self._max_over_ranks)
        max_norm = hp.max_grad_norm if hp.max_grad_norm > 0 else float("inf")
        grad_norm = clip_grad_norm(self.policy, max_norm, self.trainer.strategy) if learnable else torch.tensor(0.0)
        ok = learnable and bool(torch.isfinite(grad_norm)) and torch.isfinite(torch.tensor(totals["loss"]))
        # Collective: every rank skips together, or none does (no DDP hang).
        ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            opt.zero_grad(set_to_none=True)  # params without grads are left untouched by the step
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        self._skips_in_a_row = 0 if ok else self._skips_in_a_row + 1
        if self._skips_in_a_row > hp.max_consecutive_skips:
            raise RuntimeError(f"{self._skips_in_a_row} RL steps in a row were skipped (non-finite loss or "
                               "gradients, or no sample with a non-zero advantage); stopping")
        t_train = time.perf_counter() - t1

        t_drain = self._drain_engine()
        t2 = time.perf_counter()
        self._push_weights()
        t_sync = time.perf_counter() - t2
        log_rl_step(self, step, from_saved, rollouts, adv, keep, totals, grad_norm, ok, sched.get_last_lr()[0],
                    {"rollout": t_rollout, "train": t_train, "sync": t_sync, "drain": t_drain})

    def _drain_engine(self) -> float:
        return drain_before_push(self)

    def teardown(self, stage: str) -> None:
        if self.lagged is not None:
            self.lagged.close()

    def _accumulate(self, micro_batches: list, norms: StepNorms, totals: dict) -> None:
        accumulate_micro_batches(self, micro_batches, norms, totals)

    def _max_over_ranks(self, value: float) -> float:
        return float(self.trainer.strategy.reduce(torch.tensor(value, device=self.device), reduce_op="max"))

    def _micro_loss(self, mb, norms: StepNorms):
        """(loss, metrics, log-prob gap ``[M]``) of one packed micro-batch."""
        reference_root = self._reference_root if self.reference is not None else None
        return self.micro_batch_loss(self._policy_root, reference_root, mb, norms, self.device)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_state.state_dict()
        # The frozen reference is rebuilt from its source on load: never saved.
        weights = checkpoint.get("state_dict", {})
        for key in [k for k in weights if k.startswith("reference.")]:
            del weights[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if CHECKPOINT_KEY in checkpoint:
            state = checkpoint[CHECKPOINT_KEY]
            if self.lagged is None and any((state.get("lagged_rollouts") or {}).get("shares") or []):
                rank_zero_warn("the checkpoint holds batches generated ahead by a run with max_lag > 0; this run "
                               "has max_lag 0 and regenerates them on-policy")
            self.checkpoint_state.load_state_dict(state, strict=False)
        if self.reference is not None and "state_dict" in checkpoint:
            # Runs before the weights load: strict loading finds the reference's own tensors.
            checkpoint["state_dict"].update({f"reference.{k}": v for k, v in self.reference.state_dict().items()})
