"""The policy loss of one packed micro-batch of rollouts.

Hidden states come from the policy's base model over the packed row; log-probs and
entropy from a chunked pass over the LM head at the sampling temperature (the
distribution the engine sampled from), so ``[B, T, V]`` logits are never kept. The
engine/trainer mismatch is corrected one way or the other, never both: ``ratio`` (old
log-probs are the engine's) or ``tis`` (old log-probs are the trainer's, detached,
and each token's advantage is weighted by min(pi_trainer / pi_engine, ``tis_cap``)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qed_lightning.losses.policy import StepNorms, get_policy_loss
from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy

__all__ = ["MicroBatchLoss"]

LOSS_BACKENDS = ("torch", "liger")


@dataclass
class _Tokens:
    """The flat per-token inputs of one micro-batch's policy loss (all [M])."""

    targets: torch.Tensor
    engine_logp: torch.Tensor
    advantages: torch.Tensor
    seq: torch.Tensor
    ref_logp: torch.Tensor | None


class MicroBatchLoss:
    """Args (the RL module's settings of the same names):
        loss: Registered policy loss name; ``loss_args`` its overrides.
        backend: ``torch`` (chunked log-prob pass + the loss function) or ``liger``
            (Liger's fused linear loss; a no-grad log-prob pass adds the metrics).
        mismatch_correction: ``ratio`` or ``tis``; ``tis_cap`` caps tis's weight.
        kl_coef: beta of the per-token KL to the reference (its log-probs are passed in).
        temperature: The sampling temperature the log-probs are taken at.
        logprob_chunk_size: Rows per chunk of the LM-head pass.
    """

    def __init__(self, loss: str, loss_args: dict, backend: str, mismatch_correction: str, tis_cap: float,
                 kl_coef: float, temperature: float, logprob_chunk_size: int) -> None:
        if backend not in LOSS_BACKENDS:
            raise ValueError(f"loss_backend must be 'torch' or 'liger', got {backend!r}")
        self.loss_name, self.loss_fn, self.loss_args = loss, get_policy_loss(loss), dict(loss_args)
        if backend == "liger":
            from qed_lightning.losses.liger import check_liger_policy_loss

            check_liger_policy_loss(loss, self.loss_args)
        self.backend, self.mismatch_correction, self.tis_cap = backend, mismatch_correction, tis_cap
        self.kl_coef, self.temperature, self.logprob_chunk_size = kl_coef, temperature, logprob_chunk_size

    def __call__(self, policy_root, reference_root, mb, norms: StepNorms, device):
        """(loss, metrics, log-prob gap ``[M]`` = trainer's - engine's) of micro-batch
        ``mb``. ``policy_root(fn)`` / ``reference_root(fn)`` run ``fn(model)`` inside the
        model's root forward (under FSDP2 the tied LM head is gathered only there);
        ``reference_root`` None: no KL term."""
        mb_inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in mb.model_kwargs().items()}
        predict_at = mb.predict_at.to(device)
        targets = mb.targets.to(device)
        ref_logp = None if reference_root is None else self._reference_logp(reference_root, mb_inputs, predict_at,
                                                                            targets)
        tokens = _Tokens(targets, mb.old_logp.to(device), mb.advantages.to(device), mb.seq.to(device), ref_logp)
        policy_loss = self._torch_loss if self.backend == "torch" else self._liger_loss

        def run(policy):
            hidden = policy.base_model(**mb_inputs).last_hidden_state  # [1, L, H]
            hidden = hidden.reshape(-1, hidden.shape[-1])[predict_at]  # [M, H]
            return policy_loss(hidden, _head_weight(policy), tokens, norms)

        loss, metrics, logp = policy_root(run)
        return loss, metrics, logp.detach() - tokens.engine_logp  # [M]

    def _old_logp_and_weight(self, trainer_logp, engine_logp):
        """ratio: old = engine log-probs, no weight; tis: old = trainer's (detached) and
        each token weighted by min(pi_trainer / pi_engine, tis_cap)."""
        if self.mismatch_correction == "tis":
            old = trainer_logp.detach()
            return old, (old - engine_logp).exp().clamp(max=self.tis_cap)  # [M]
        return engine_logp, None

    def _objective(self, logp, entropy, t: _Tokens, norms: StepNorms):
        """The registered loss on ``logp`` with the mismatch setting applied; also
        returns the old log-probs and per-token weight it used."""
        old, token_weight = self._old_logp_and_weight(logp, t.engine_logp)
        advantages = t.advantages if token_weight is None else t.advantages * token_weight
        loss, metrics = self.loss_fn(logp, old, advantages, t.seq, entropy, norms, ref_logp=t.ref_logp,
                                     kl_coef=self.kl_coef, **self.loss_args)
        return loss, metrics, old, token_weight

    def _torch_loss(self, hidden, weight, t: _Tokens, norms: StepNorms):
        logp, entropy = token_logprobs_and_entropy(hidden, weight, t.targets, self.temperature,
                                                   self.logprob_chunk_size)
        loss, metrics, _, _ = self._objective(logp, entropy, t, norms)
        return loss, metrics, logp

    def _liger_loss(self, hidden, weight, t: _Tokens, norms: StepNorms):
        from qed_lightning.losses.liger import liger_policy_loss

        with torch.no_grad():  # Liger returns no log-probs: metrics, the gap and tis need them
            logp, entropy = token_logprobs_and_entropy(hidden, weight, t.targets, self.temperature,
                                                       self.logprob_chunk_size)
            _, metrics, old, token_weight = self._objective(logp, entropy, t, norms)
        loss = liger_policy_loss(self.loss_name, hidden, weight, t.targets, old, t.advantages, t.seq, norms,
                                 self.temperature, self.loss_args, ref_logp=t.ref_logp, kl_coef=self.kl_coef,
                                 token_weight=token_weight)
        return loss, metrics, logp

    @torch.no_grad()
    def _reference_logp(self, reference_root, mb_inputs, predict_at, targets) -> torch.Tensor:
        def run(reference):
            hidden = reference.base_model(**mb_inputs).last_hidden_state  # [1, L, H]
            hidden = hidden.reshape(-1, hidden.shape[-1])[predict_at]  # [M, H]
            logp, _ = token_logprobs_and_entropy(hidden, _head_weight(reference), targets, self.temperature,
                                                 self.logprob_chunk_size)
            return logp

        return reference_root(run)


def _head_weight(model) -> torch.Tensor:
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("LM heads with a bias are not supported by the RL log-prob pass")
    return head.weight
