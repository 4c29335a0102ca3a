"""Packing into micro-batches does not change the step's gradient: one big micro-batch
and many small ones give the same gradients (the normalisers are global to the step)."""
import pytest
import torch

from qed_lightning.contracts import Completion, Problem, Verdict
from qed_lightning.judging import RuleJudge
from qed_lightning.losses.advantages import group_mean
from qed_lightning.losses.policy import POLICY_LOSSES, StepNorms
from qed_lightning.modules import GRPOModule
from qed_lightning.rollouts.batch import build_rollout_batch
from qed_lightning.rollouts.microbatch import pack_rollouts


def rollout_batch():
    g = torch.Generator().manual_seed(0)
    groups = []
    for p in range(2):
        prompt = torch.randint(3, 800, (5 + p,), generator=g).tolist()
        group = []
        for k in range(3):
            comp = torch.randint(3, 800, (4 + 2 * k,), generator=g).tolist()
            group.append(Completion(prompt, comp, (-torch.rand(len(comp), generator=g)).tolist(), "stop", "x", 0))
        groups.append(group)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9, 0.4])
    batch = build_rollout_batch([Problem("a", "A"), Problem("b", "B")], groups, [Verdict(0)] * 6, rewards,
                                torch.ones(6, dtype=torch.bool), pad_id=0)
    return batch, group_mean(rewards, batch.group_ids, batch.reward_mask)


@pytest.mark.parametrize("loss", sorted(POLICY_LOSSES))
def test_gradients_do_not_depend_on_the_micro_batch_budget(tiny_model_dir, loss):
    module = GRPOModule(model=str(tiny_model_dir), judge=RuleJudge("qed_lightning.judging.rules:contains_letter_e"),
                        loss=loss)
    module.configure_model()
    batch, adv = rollout_batch()
    keep = torch.ones(6, dtype=torch.bool)
    keep[4] = False  # a masked sample counts nowhere
    lengths = torch.where(keep, batch.completion_mask.sum(1), 0)
    norms = StepNorms(samples=6, tokens=int(lengths.sum()), max_tokens=8, seq_lengths=lengths)
    grads = []
    for budget in (64, 14):
        module.policy.zero_grad(set_to_none=True)
        micro = pack_rollouts(batch, adv, keep, budget, pad_id=0)
        for mb in micro:
            module._micro_loss(mb, norms)[0].backward()
        grads.append((len(micro), [p.grad.clone() for p in module.policy.parameters() if p.grad is not None]))
    (n_big, big), (n_small, small) = grads
    assert n_big == 1 and n_small >= 4
    for a, b in zip(big, small):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_truncated_importance_weight_setting(tiny_model_dir):
    import dataclasses

    judge = RuleJudge("qed_lightning.judging.rules:contains_letter_e")
    ratio = GRPOModule(model=str(tiny_model_dir), judge=judge, loss="dapo")
    tis = GRPOModule(model=str(tiny_model_dir), judge=judge, loss="dapo", mismatch_correction="tis", tis_cap=2.0)
    ratio.configure_model()
    tis.configure_model()
    batch, adv = rollout_batch()
    keep = torch.ones(6, dtype=torch.bool)
    lengths = batch.completion_mask.sum(1)
    norms = StepNorms(samples=6, tokens=int(lengths.sum()), max_tokens=8, seq_lengths=lengths)
    (mb,) = pack_rollouts(batch, adv, keep, 128, pad_id=0)
    with torch.no_grad():  # the trainer's own log-probs of the sampled tokens
        ratio._micro_loss(mb, norms)
        h = ratio.policy.base_model(**mb.model_kwargs()).last_hidden_state.reshape(-1, 64)[mb.predict_at]
        from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy

        trainer_logp, _ = token_logprobs_and_entropy(h, ratio.policy.get_output_embeddings().weight, mb.targets, 0.8)

    def grads(module, micro):
        module.policy.zero_grad(set_to_none=True)
        module._micro_loss(micro, norms)[0].backward()
        return [p.grad.clone() for p in module.policy.parameters() if p.grad is not None]

    # the engine 5 nats less sure of every token: weight exp(5) capped at 2 = ratio mode with
    # old = trainer log-probs and twice the advantages
    shifted = dataclasses.replace(mb, old_logp=trainer_logp - 5.0)
    doubled = dataclasses.replace(mb, old_logp=trainer_logp, advantages=mb.advantages * 2)
    for a, b in zip(grads(tis, shifted), grads(ratio, doubled)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="mismatch_correction"):
        GRPOModule(model=str(tiny_model_dir), judge=judge, mismatch_correction="both")


def _step_grads(module, budget, keep=None):
    batch, adv = rollout_batch()
    keep = torch.ones(6, dtype=torch.bool) if keep is None else keep
    lengths = torch.where(keep, batch.completion_mask.sum(1), 0)
    norms = StepNorms(samples=6, tokens=int(lengths.sum()), max_tokens=8, seq_lengths=lengths)
    module.policy.zero_grad(set_to_none=True)
    total, metrics = 0.0, []
    for mb in pack_rollouts(batch, adv, keep, budget, pad_id=0):
        loss, m, gap = module._micro_loss(mb, norms)
        loss.backward()
        total += float(loss.detach())
        metrics.append({k: float(v) for k, v in m.items()})
    return total, {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}, metrics


@pytest.mark.parametrize("loss,mismatch", [("dapo", "ratio"), ("grpo", "ratio"), ("gspo", "tis")])
def test_liger_backend_steps_like_the_torch_backend(tiny_model_dir, loss, mismatch):
    pytest.importorskip("liger_kernel")
    judge = RuleJudge("qed_lightning.judging.rules:contains_letter_e")
    torch_path = GRPOModule(model=str(tiny_model_dir), judge=judge, loss=loss, mismatch_correction=mismatch)
    liger_path = GRPOModule(model=str(tiny_model_dir), judge=judge, loss=loss, mismatch_correction=mismatch,
                            loss_backend="liger")
    torch_path.configure_model()
    liger_path.configure_model()
    want, got = _step_grads(torch_path, 14), _step_grads(liger_path, 14)
    assert got[0] == pytest.approx(want[0], rel=1e-4, abs=1e-7)
    assert got[2] == want[2]  # the metrics come from the same no-grad log-probs
    assert want[1].keys() == got[1].keys()
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="entropy_coef: 0"):
        GRPOModule(model=str(tiny_model_dir), judge=judge, loss="qed_nano", loss_backend="liger")


def test_kl_reference_is_loaded_only_with_kl_coef_frozen_and_never_checkpointed(tiny_model_dir):
    judge = RuleJudge("qed_lightning.judging.rules:contains_letter_e")
    plain = GRPOModule(model=str(tiny_model_dir), judge=judge, loss="dapo")
    plain.configure_model()
    assert plain.reference is None
    with_kl = GRPOModule(model=str(tiny_model_dir), judge=judge, loss="dapo", kl_coef=0.5)
    with_kl.configure_model()
    assert not any(p.requires_grad for p in with_kl.reference.parameters()) and not with_kl.reference.training
    # policy == reference at the start: the KL term is 0 and the gradient is the plain loss's
    loss0, grads0, m0 = _step_grads(with_kl, 64)
    loss_plain, grads_plain, _ = _step_grads(plain, 64)
    assert m0[0]["kl_sum"] == pytest.approx(0.0, abs=1e-6) and loss0 == pytest.approx(loss_plain, rel=1e-5)
    # move the policy away: KL > 0 and it pulls back (its gradient term is non-zero)
    with torch.no_grad():
        for p in with_kl.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, _, m1 = _step_grads(with_kl, 64)
    assert m1[0]["kl_sum"] > 1e-3
    assert sum(r.requires_grad for r in with_kl.reference.parameters()) == 0
    checkpoint = {"state_dict": with_kl.state_dict()}
    assert any(k.startswith("reference.") for k in checkpoint["state_dict"])
    with_kl.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("reference.") for k in checkpoint["state_dict"])
    with_kl.on_load_checkpoint(checkpoint)  # restores the reference's keys so strict loading passes
    with_kl.load_state_dict(checkpoint["state_dict"], strict=True)
