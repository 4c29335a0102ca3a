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
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from qed_lightning.checkpointing.registry import CHECKPOINT_KEY, CheckpointRegistry, RNGState
from qed_lightning.contracts import SamplingSettings
from qed_lightning.engines.build import ENGINES_ELSEWHERE, EngineContext, build_engine
from qed_lightning.engines.full_weights import full_weights_for_push
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.client import CompletionClient
from qed_lightning.loggers.rollout_table import log_rollout_table
from qed_lightning.losses.advantages import get_advantage, training_mask
from qed_lightning.losses.policy import StepNorms, get_policy_loss
from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy
from qed_lightning.models import load_policy, load_tokenizer, resolve_model_path
from qed_lightning.modules.collective_steps import (backward_sync, check_step_strategy, clip_grad_norm,
                                                    micro_batch_count, push_from_rank_zero, same_keys_on_every_rank,
                                                    zero_loss)
from qed_lightning.modules.lag_settings import check_schedule, problems_ahead
from qed_lightning.modules.lagged_rollouts import LaggedRollouts
from qed_lightning.modules.preemptible_rollouts import step_rollouts
from qed_lightning.modules.rank_failures import agree_on_failure
from qed_lightning.modules.rl_metrics import step_metrics
from qed_lightning.modules.sharding import RootForward, shard_model
from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
from qed_lightning.optim import build_optimizer, build_scheduler
from qed_lightning.precision_guard import check_update_resolution
from qed_lightning.reasoning_cache.producer import ReasoningCacheProducer, ReasoningCacheSettings
from qed_lightning.rollouts.datamodule import ProblemBatch
from qed_lightning.rollouts.lagged import lag_metrics
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
        self.loss_fn, self.loss_args = get_policy_loss(loss), dict(loss_args or {})
        check_schedule(max_lag, judge_overlap, rollout_chunks, self.sampling, self.hparams.mismatch_correction,
                       self.loss_fn, self.loss_args, self.rc_settings is not None, judge,
                       self.hparams.background_generation, self.engine_settings.backend)
        if loss_backend == "liger":
            from qed_lightning.losses.liger import check_liger_policy_loss

            check_liger_policy_loss(loss, self.loss_args)
        self._policy_loss = {"torch": self._torch_policy_loss, "liger": self._liger_policy_loss}.get(loss_backend)
        if self._policy_loss is None:
            raise ValueError(f"loss_backend must be 'torch' or 'liger', got {loss_backend!r}")
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
            self.checkpoint_state.register("judge_cache", _JudgeCacheRef(self.judge))

    def configure_optimizers(self):
        hp = self.hparams
        # bf16 weights stepped in place at an lr they cannot resolve: refused (precision_guard)
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
        """Every rank's engine gets the full weights of this step. Under FSDP they are
        gathered one unit at a time (every rank takes part in each gather); a served
        engine is shared by all ranks, so rank 0 pushes once and the others wait."""
        self.engine.wake_up(["weights"])
        weights = full_weights_for_push(self.policy)
        if getattr(self.engine, "shared_by_ranks", False) and self.trainer.world_size > 1:
            strategy = self.trainer.strategy
            push_from_rank_zero(weights, lambda w: self.engine.load_weights(w, version=self.global_step),
                                self.global_rank == 0, lambda flag: strategy.reduce_boolean_decision(flag, all=False))
        else:
            self.engine.load_weights(weights, version=self.global_step)
        self.engine.wake_up(["kv_cache"])

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
            rollouts, from_saved = self._lagged_rollouts(batch.problems, step)
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
        totals = {"loss": 0.0, "token_count": 0.0, "clip_count": 0.0, "entropy_sum": 0.0, "ratio_sum": 0.0,
                  "kl_sum": 0.0, "gap_sum": 0.0, "gap_max": 0.0, "is_sum": 0.0, "is_sq_sum": 0.0, "is_max": 0.0}
        if learnable:
            micro_batches = pack_rollouts(rollouts, adv, keep, hp.micro_batch_tokens, self.producer.pad_id)
            self._accumulate(micro_batches, norms, totals)
        totals = self._reduce_totals(totals)
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
        self._log_step(step, from_saved, rollouts, adv, keep, totals, grad_norm, ok, sched.get_last_lr()[0],
                       {"rollout": t_rollout, "train": t_train, "sync": t_sync, "drain": t_drain})

    def _drain_engine(self) -> float:
        """With background generation, the seconds the push waited for the batches ahead
        to finish generating: a push never lands while a request runs, on any rank (the
        servers are shared, so the ranks meet at a barrier before rank 0 pushes)."""
        if self.lagged is None or not self.lagged.background:
            return 0.0
        start = time.perf_counter()
        self.lagged.drain()
        if self.trainer.world_size > 1:
            self.trainer.strategy.barrier("qed_lightning.drained")
        return time.perf_counter() - start

    def _lagged_rollouts(self, problems, step: int):
        """Batch ``step`` of a lagged run, the batches ahead launched (every rank fails
        together, as in ``step_rollouts``)."""
        if self.pending_rollouts.step is not None:
            raise ValueError(f"the checkpoint holds step {self.pending_rollouts.step}'s rollouts saved by an "
                             "on-policy run's preemption: resume it with max_lag 0")
        trainer = self.trainer
        last = trainer.max_steps - 1 if trainer.max_steps is not None and trainer.max_steps > 0 else None
        batch, metrics, from_saved = agree_on_failure(
            lambda: self.lagged.take(step, problems, lambda s: problems_ahead(trainer, s), last,
                                     trainer.global_rank, trainer.world_size), f"step {step}: lagged rollouts")
        self.producer.last_metrics = metrics
        return batch, from_saved

    def teardown(self, stage: str) -> None:
        if self.lagged is not None:
            self.lagged.close()

    def _accumulate(self, micro_batches: list, norms: StepNorms, totals: dict) -> None:
        """Backward every micro-batch of the step (the same count on every rank, see
        ``collective_steps``), adding their sums into ``totals``."""
        strategy = self.trainer.strategy
        count = micro_batch_count(strategy, len(micro_batches), self.trainer.world_size, self.device)
        for i in range(count):
            with backward_sync(strategy, enabled=i == count - 1):
                if i >= len(micro_batches):
                    self.manual_backward(self._policy_root(zero_loss, self.producer.pad_id))
                    continue
                loss, metrics, diff = self._micro_loss(micro_batches[i], norms)
                self.manual_backward(loss)
            totals["loss"] += float(loss.detach())
            for k in ("token_count", "clip_count", "entropy_sum", "ratio_sum", "kl_sum"):
                totals[k] += float(metrics[k])
            gap, weight = diff.abs(), diff.double().exp()  # [M]: |log-prob gap|, pi_trainer / pi_engine
            totals["gap_sum"] += float(gap.sum())
            totals["gap_max"] = max(totals["gap_max"], float(gap.max()) if gap.numel() else 0.0)
            totals["is_sum"] += float(weight.sum())
            totals["is_sq_sum"] += float((weight * weight).sum())
            totals["is_max"] = max(totals["is_max"], float(weight.max()) if weight.numel() else 0.0)

    def _reduce_totals(self, totals: dict) -> dict:
        """The step's sums over all ranks; ``loss`` becomes the step's objective (each
        rank's loss carries the world-size factor DDP's averaging takes out)."""
        world = self.trainer.world_size
        if world == 1:
            return totals
        maxima = ("gap_max", "is_max")
        keys = [k for k in totals if k not in maxima]
        summed = self._sum_tensor(torch.tensor([totals[k] for k in keys], dtype=torch.float64))
        out = dict(zip(keys, summed.tolist()))
        out["loss"] /= world
        for key in maxima:
            out[key] = float(self.trainer.strategy.reduce(torch.tensor(totals[key], device=self.device),
                                                          reduce_op="max"))
        return out

    def _micro_loss(self, mb, norms: StepNorms):
        mb_inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in mb.model_kwargs().items()}
        predict_at = mb.predict_at.to(self.device)
        tokens = _Tokens(mb.targets.to(self.device), mb.old_logp.to(self.device), mb.advantages.to(self.device),
                         mb.seq.to(self.device), self._reference_logp(mb_inputs, predict_at, mb.targets))

        def run(policy):  # inside the root's forward: under FSDP2 the LM head is gathered
            hidden = policy.base_model(**mb_inputs).last_hidden_state  # [1, L, H]
            hidden = hidden.reshape(-1, hidden.shape[-1])[predict_at]  # [M, H]
            return self._policy_loss(hidden, _head_weight(policy), tokens, norms)

        loss, metrics, logp = self._policy_root(run)
        return loss, metrics, logp.detach() - tokens.engine_logp  # [M]

    def _old_logp_and_weight(self, trainer_logp, engine_logp):
        """ratio mode: old = engine log-probs, no weight; tis: old = trainer's (detached)
        and each token weighted by min(pi_trainer / pi_engine, tis_cap)."""
        if self.hparams.mismatch_correction == "tis":
            old = trainer_logp.detach()
            return old, (old - engine_logp).exp().clamp(max=self.hparams.tis_cap)  # [M]
        return engine_logp, None

    def _objective(self, logp, entropy, t: "_Tokens", norms: StepNorms):
        """The registered loss on ``logp`` with the mismatch setting applied; also
        returns the old log-probs and per-token weight it used."""
        old, token_weight = self._old_logp_and_weight(logp, t.engine_logp)
        advantages = t.advantages if token_weight is None else t.advantages * token_weight
        loss, metrics = self.loss_fn(logp, old, advantages, t.seq, entropy, norms, ref_logp=t.ref_logp,
                                     kl_coef=self.hparams.kl_coef, **self.loss_args)
        return loss, metrics, old, token_weight

    def _torch_policy_loss(self, hidden, weight, t: "_Tokens", norms: StepNorms):
        logp, entropy = token_logprobs_and_entropy(hidden, weight, t.targets, self.sampling.temperature,
                                                   self.hparams.logprob_chunk_size)
        loss, metrics, _, _ = self._objective(logp, entropy, t, norms)
        return loss, metrics, logp

    def _liger_policy_loss(self, hidden, weight, t: "_Tokens", norms: StepNorms):
        from qed_lightning.losses.liger import liger_policy_loss

        with torch.no_grad():  # Liger returns no log-probs: metrics, the gap and tis need them
            logp, entropy = token_logprobs_and_entropy(hidden, weight, t.targets, self.sampling.temperature,
                                                       self.hparams.logprob_chunk_size)
            _, metrics, old, token_weight = self._objective(logp, entropy, t, norms)
        loss = liger_policy_loss(self.hparams.loss, hidden, weight, t.targets, old, t.advantages, t.seq, norms,
                                 self.sampling.temperature, self.loss_args, ref_logp=t.ref_logp,
                                 kl_coef=self.hparams.kl_coef, token_weight=token_weight)
        return loss, metrics, logp

    @torch.no_grad()
    def _reference_logp(self, mb_inputs, predict_at, targets) -> torch.Tensor | None:
        if self.reference is None:
            return None

        def run(reference):
            hidden = reference.base_model(**mb_inputs).last_hidden_state  # [1, L, H]
            hidden = hidden.reshape(-1, hidden.shape[-1])[predict_at]  # [M, H]
            logp, _ = token_logprobs_and_entropy(hidden, _head_weight(reference), targets.to(self.device),
                                                 self.sampling.temperature, self.hparams.logprob_chunk_size)
            return logp

        with torch.no_grad():
            return self._reference_root(run)

    def _log_step(self, step, from_saved, rollouts, adv, keep, totals, grad_norm, ok, lr, seconds) -> None:
        metrics = step_metrics(rollouts, adv, keep, totals, grad_norm, ok, lr, seconds)
        if rollouts.versions is not None:
            metrics.update(lag_metrics(rollouts.versions, step))
        metrics.update(self.producer.last_metrics)
        metrics["rollout/from_saved"] = float(from_saved)  # 1: trained on rollouts saved at a preemption
        metrics.update(getattr(self.engine, "last_sync", {}))
        # Under DDP each rank holds equal shares of the step (whole groups, same n):
        # the mean over ranks of a rank's mean is the step's mean; maxima take the max.
        sync = self.trainer.world_size > 1
        if sync:
            metrics = same_keys_on_every_rank(metrics)
        # Counts add up over ranks.
        maxima = {k: v for k, v in metrics.items() if k.endswith("_max")}
        minima = {k: v for k, v in metrics.items() if k.endswith("_min")}
        counts = {k: v for k, v in metrics.items() if k in _COUNT_METRICS}
        means = {k: v for k, v in metrics.items() if k not in maxima and k not in minima and k not in counts}
        for group, fx in ((means, "mean"), (maxima, "max"), (minima, "min"), (counts, "sum")):
            self.log_dict(group, on_step=True, on_epoch=False, batch_size=rollouts.num_samples, sync_dist=sync,
                          reduce_fx=fx)
        self.log("reward", metrics["reward/mean"], prog_bar=True, logger=False, batch_size=rollouts.num_samples)
        recorded = self._recorder.last_rows if self._recorder is not None else None
        if self.global_rank == 0 and recorded is not None and recorded[0] == step:
            log_rollout_table(self.loggers, step, recorded[1])

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


_COUNT_METRICS = frozenset({"train/kept_samples", "rollout/completion_tokens", "rollout/skipped_long_prompts",
                            "rollout/too_old_samples"})


@dataclass
class _Tokens:
    """The flat per-token inputs of one micro-batch's policy loss (all [M])."""

    targets: torch.Tensor
    engine_logp: torch.Tensor
    advantages: torch.Tensor
    seq: torch.Tensor
    ref_logp: torch.Tensor | None


def _head_weight(model) -> torch.Tensor:
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("LM heads with a bias are not supported by the RL log-prob pass")
    return head.weight


class _JudgeCacheRef:
    """Checkpoints record where the judge's verdict cache is, never its contents."""

    def __init__(self, judge) -> None:
        self.judge = judge

    def state_dict(self) -> dict:
        return {"reference": self.judge.cache_reference()}

    def load_state_dict(self, state: dict) -> None:
        pass  # informational: the cache is found again through the judge's own settings
