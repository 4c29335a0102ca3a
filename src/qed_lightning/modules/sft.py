"""SFTModule: distillation of reasoning traces and proofs into a policy.

One batch is one optimizer step (``data.steps.StepBatch``): its micro-batches are
run with manual backward, each scaled by the step's *global* target-token count,
so the loss is the mean over every trained token of the step regardless of packing,
micro-batching or the number of ranks."""
from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import torch
import torchmetrics

from qed_lightning.checkpointing.registry import CHECKPOINT_KEY, CheckpointRegistry, RNGState
from qed_lightning.data.steps import StepBatch
from qed_lightning.losses import liger_available
from qed_lightning.models import load_policy, load_tokenizer
from qed_lightning.modules.collective_steps import (backward_sync, check_step_strategy, clip_grad_norm,
                                                    micro_batch_count)
from qed_lightning.modules.lm_loss import CausalLMWithLoss
from qed_lightning.modules.sharding import shard_model
from qed_lightning.optim import build_optimizer, build_scheduler
from qed_lightning.optim.precision_guard import check_update_resolution

log = logging.getLogger(__name__)


def accumulate_step_gradients(
    lm: CausalLMWithLoss, batch: StepBatch, *, global_targets: float, world_size: int, backward=None,
    strategy=None,
) -> torch.Tensor:
    """Backward every micro-batch of one optimizer step; returns this rank's loss sum.

    DDP averages gradients over ranks, so each micro-batch's summed loss is scaled by
    ``world_size / global_targets``: the synced gradient is then that of
    sum(all token losses of the step, all ranks) / global_targets, whatever the
    packing, micro-batching or rank count. With a ``strategy`` and several ranks,
    every rank runs the same number of passes (``collective_steps``).
    """
    backward = backward or torch.Tensor.backward
    scale = world_size / max(global_targets, 1.0)
    loss_sum = torch.zeros(())
    micro_batches = list(batch.micro_batches)
    device = next(lm.parameters()).device
    count = micro_batch_count(strategy, len(micro_batches), world_size, device) if strategy else len(micro_batches)
    for i in range(count):
        with backward_sync(strategy, enabled=i == count - 1):
            if i >= len(micro_batches):
                backward(lm(None)[0])
                continue
            micro_loss, _ = lm(micro_batches[i])
            backward(micro_loss * scale)
        loss_sum = loss_sum.to(micro_loss.device) + micro_loss.detach()
    return loss_sum


def default_loss(cuda: bool | None = None, liger: bool | None = None) -> str:
    """Liger's fused loss on CUDA when installed, else the chunked torch loss. The
    chunked loss keeps the LM head out of autocast (its softmax must be fp32), so with
    fp32 master weights on CUDA it runs the head's matmuls in fp32: say so."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    liger = liger_available() if liger is None else liger
    if cuda and not liger:
        log.warning("loss: auto on CUDA without liger-kernel: the chunked loss runs the LM head in the weights' "
                    "dtype (fp32 under bf16-mixed), slower than Liger's fused loss; install liger-kernel")
    return "liger" if cuda and liger else "chunked"


class SFTModule(pl.LightningModule):
    """Supervised fine-tuning of a causal LM on chat-formatted reasoning + proof.

    Args:
        model: ``demo``, ``tiny``, a local directory, or a hub id.
        revision: Hub revision (branch, tag or commit) of ``model``.
        dtype: Weight dtype: ``float32``, ``bfloat16`` or ``float16``.
        loss: ``auto`` (Liger on CUDA, else chunked), ``chunked``, ``liger`` or ``reference``.
        loss_chunk_size: Rows of hidden states per chunk of the chunked loss.
        optimizer: ``adamw`` or ``adamw_8bit`` (bitsandbytes).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        lr_schedule: ``cosine`` or ``constant`` (both after linear warmup).
        warmup_ratio: Share of all optimizer steps spent warming up.
        max_grad_norm: Clip the global gradient norm to this (0 disables).
        gradient_checkpointing: Recompute activations in backward to save memory.
        attn_implementation: transformers' attention kernel for the trainer's model; None: flash
            attention on CUDA when installed (packed rows need it to stay fast), else the default.
        liger_kernels: Patch the model with Liger's Triton kernels (CUDA only).
    """

    def __init__(
        self,
        model: str = "tiny",
        revision: str | None = None,
        dtype: str = "float32",
        loss: str = "auto",
        loss_chunk_size: int = 256,
        optimizer: str = "adamw",
        lr: float = 3e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str = "cosine",
        warmup_ratio: float = 0.03,
        max_grad_norm: float = 1.0,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        liger_kernels: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.tokenizer = load_tokenizer(model, revision)
        self.loss_name = default_loss() if loss == "auto" else loss
        self.lm: CausalLMWithLoss | None = None
        self.checkpoint_state = CheckpointRegistry()
        self.checkpoint_state.register("rng", RNGState())
        self.val_loss_sum = torchmetrics.SumMetric()
        self.val_tokens = torchmetrics.SumMetric()
        self._step_started = 0.0

    @property
    def policy(self):
        return self.lm.policy

    def configure_model(self) -> None:
        if self.lm is not None:
            return
        hp = self.hparams
        policy = load_policy(hp.model, hp.revision, hp.dtype, hp.attn_implementation)
        if hp.liger_kernels and torch.cuda.is_available():
            from qed_lightning.losses.liger import apply_liger_kernels

            apply_liger_kernels(policy)
        if hp.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
        policy.train()  # from_pretrained returns eval mode; Lightning keeps modes as found
        self.lm = CausalLMWithLoss(policy, self.loss_name, hp.loss_chunk_size)
        # FSDP2 under ModelParallelStrategy (bf16-mixed: gathers bf16, reduces fp32); else unchanged
        precision = self.trainer.precision if self.device_mesh is not None else None
        shard_model(policy, self.device_mesh, root=self.lm, precision=precision)

    def on_fit_start(self) -> None:
        check_step_strategy(self.trainer.strategy)  # once, before any backward: every rank refuses together

    def configure_optimizers(self):
        hp = self.hparams
        strategy = self.trainer.strategy
        # bf16 weights stepped in place at an lr they cannot resolve: refused (optim.precision_guard)
        check_update_resolution(self.lm.parameters(), optimizer=hp.optimizer, lr=hp.lr, model_dtype=hp.dtype,
                                precision=self.trainer.precision,
                                reduce=lambda t: strategy.reduce(t.to(self.device), reduce_op="sum"))
        opt = build_optimizer(
            hp.optimizer, self.lm.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas)
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = build_scheduler(hp.lr_schedule, opt, total_steps=total, warmup_ratio=hp.warmup_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _global_sum(self, value: float | int) -> float:
        total = self.trainer.strategy.reduce(
            torch.tensor(float(value), device=self.device), reduce_op="sum"
        )
        return float(total)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._step_started = time.perf_counter()

    def training_step(self, batch: StepBatch, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        sched = self.lr_schedulers()
        global_targets = self._global_sum(batch.num_target_tokens)
        loss_sum = accumulate_step_gradients(
            self.lm, batch, global_targets=global_targets,
            world_size=self.trainer.world_size, backward=self.manual_backward,
            strategy=self.trainer.strategy,
        )
        max_norm = self.hparams.max_grad_norm
        grad_norm = clip_grad_norm(self.lm, max_norm if max_norm > 0 else float("inf"), self.trainer.strategy)
        lr = sched.get_last_lr()[0]
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss = self._global_sum(loss_sum.item()) / max(global_targets, 1.0)
        tokens = self._global_sum(batch.num_tokens)
        elapsed = time.perf_counter() - self._step_started
        metrics = {
            "train/loss": loss,
            "train/grad_norm": float(grad_norm),
            "train/lr": lr,
            "train/target_tokens": global_targets,
            "train/tokens": tokens,
            "train/step_time_s": elapsed,
            "train/tokens_per_s": tokens / max(elapsed, 1e-9),
        }
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=batch.num_samples)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=batch.num_samples)
        return torch.tensor(loss)

    def validation_step(self, batch: StepBatch, batch_idx: int) -> None:
        for micro in batch.micro_batches:
            loss_sum, count = self.lm(micro)
            self.val_loss_sum.update(loss_sum)
            self.val_tokens.update(count)

    def on_validation_epoch_end(self) -> None:
        total = self.val_tokens.compute()
        if total > 0:
            self.log("val/loss", self.val_loss_sum.compute() / total, prog_bar=True)
        self.val_loss_sum.reset()
        self.val_tokens.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_state.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if CHECKPOINT_KEY in checkpoint:
            self.checkpoint_state.load_state_dict(checkpoint[CHECKPOINT_KEY])
