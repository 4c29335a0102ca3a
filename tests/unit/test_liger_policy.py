"""Liger's fused linear GRPO loss against the torch path (losses/policy.py over
token_logprobs_and_entropy): same value and gradients, with the step-global
normalisers, across two micro-batches, with KL and with a per-token weight."""
import pytest
import torch

from qed_lightning.losses.liger import LIGER_POLICY_LOSSES, check_liger_policy_loss, liger_available, liger_policy_loss
from qed_lightning.losses.policy import StepNorms, get_policy_loss
from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy

pytestmark = pytest.mark.skipif(not liger_available(), reason="liger-kernel is not installed")

V, H, T = 13, 6, 0.7
LENGTHS = [3, 2, 4]  # three samples; micro-batches hold samples {0, 1} and {2}
MICRO = [[0, 1], [2]]
LOSS_ARGS = {"qed_nano": {"entropy_coef": 0.0}, "gspo": {"eps_low": 0.05, "eps_high": 0.08}}


def tensors():
    g = torch.Generator().manual_seed(0)
    m = sum(LENGTHS)
    seq = torch.repeat_interleave(torch.arange(3), torch.tensor(LENGTHS))
    return dict(
        hidden=torch.randn(m, H, generator=g), weight=torch.randn(V, H, generator=g) * 0.5,
        targets=torch.randint(0, V, (m,), generator=g), seq=seq,
        old=torch.randn(m, generator=g) * 0.3 - 2.0, ref=torch.randn(m, generator=g) * 0.3 - 2.0,
        adv=torch.tensor([0.7, -0.4, 0.2])[seq], tis=torch.rand(m, generator=g) + 0.5,
    )


def run(backend, name, kl_coef=0.0, weighted=False):
    t = tensors()
    hidden, weight = t["hidden"].requires_grad_(), t["weight"].requires_grad_()
    norms = StepNorms(samples=4, tokens=sum(LENGTHS), max_tokens=5, seq_lengths=torch.tensor(LENGTHS))
    total = 0.0
    for samples in MICRO:
        idx = torch.cat([(t["seq"] == s).nonzero()[:, 0] for s in samples])
        h, tg, sq, old, adv, ref, w = (x[idx] for x in (hidden, t["targets"], t["seq"], t["old"], t["adv"], t["ref"],
                                                         t["tis"]))
        args = LOSS_ARGS.get(name, {})
        if backend == "torch":
            logp, ent = token_logprobs_and_entropy(h, weight, tg, T, chunk_size=4)
            loss, _ = get_policy_loss(name)(logp, old, adv * w if weighted else adv, sq, ent, norms,
                                            ref_logp=ref, kl_coef=kl_coef, **args)
        else:
            loss = liger_policy_loss(name, h, weight, tg, old, adv, sq, norms, T, args, ref_logp=ref,
                                     kl_coef=kl_coef, token_weight=w if weighted else None)
        loss.backward()
        total += float(loss.detach())
    return total, hidden.grad, weight.grad


@pytest.mark.parametrize("name", sorted(LIGER_POLICY_LOSSES))
@pytest.mark.parametrize("kl_coef,weighted", [(0.0, False), (0.05, False), (0.0, True)],
                         ids=["plain", "kl", "token_weight"])
def test_liger_equals_the_torch_path(name, kl_coef, weighted):
    want = run("torch", name, kl_coef, weighted)
    got = run("liger", name, kl_coef, weighted)
    assert got[0] == pytest.approx(want[0], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-6)
    assert want[1].abs().sum() > 0  # a gradient that can disagree


def test_what_liger_cannot_serve_is_refused_by_name():
    with pytest.raises(ValueError, match="entropy_coef: 0 for 'qed_nano'"):
        check_liger_policy_loss("qed_nano", {})
    with pytest.raises(ValueError, match="entropy bonus"):
        check_liger_policy_loss("dapo", {"entropy_coef": 1e-3})
    with pytest.raises(ValueError, match="not 'reinforce'"):
        check_liger_policy_loss("reinforce", {})
    check_liger_policy_loss("dapo", {})  # servable: no error
