"""Policy losses and advantages against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from qed_lightning.contracts import Completion, Problem, Verdict
from qed_lightning.losses.advantages import get_advantage, zero_advantage_groups
from qed_lightning.losses.policy import POLICY_LOSSES, StepNorms, get_policy_loss, kl_k3
from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy
from qed_lightning.modules.rl_metrics import step_metrics
from qed_lightning.rollouts.batch import build_rollout_batch

# two sequences: seq 0 has tokens 0,1; seq 1 has token 2
LOGP = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.9)], dtype=torch.float64)
OLD = torch.tensor([math.log(0.25), math.log(0.4), math.log(0.9)], dtype=torch.float64)  # ratios 2, 0.5, 1
ADV = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)
SEQ = torch.tensor([0, 0, 1])
ENT = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
NORMS = StepNorms(samples=4, tokens=3, max_tokens=10, seq_lengths=torch.tensor([2, 1]))


def run(name, norms=NORMS, **kw):
    logp = LOGP.clone().requires_grad_()
    loss, metrics = get_policy_loss(name)(logp, OLD, ADV, SEQ, ENT, norms, **kw)
    loss.backward()
    return loss.item(), logp.grad, metrics


def test_qed_nano_by_hand():
    # eps 4: nothing clips (ratios 2, .5, 1 inside [-3, 5]); obj = r*A + 1e-4 H
    loss, grad, m = run("qed_nano")
    obj = 2 * 1 + 0.5 * 1 + 1 * -2 + 1e-4 * 0.6
    assert loss == pytest.approx(-obj / 4)
    # d(-r A / N)/dlogp = -r A / N
    torch.testing.assert_close(grad, torch.tensor([-2 / 4, -0.5 / 4, 2 / 4], dtype=torch.float64))
    assert m["clip_count"] == 0 and m["token_count"] == 3


def test_grpo_clips_and_averages_per_sequence():
    # eps .2: token 0 r=2 A=1 -> min(2, 1.2) = 1.2 (clipped, no grad); token 1 r=.5 A=1 -> min(.5, .8) = .5
    # seq 0 mean = (1.2 + .5) / 2; seq 1: r=1 -> -2; loss = -(0.85 - 2) / 4
    loss, grad, m = run("grpo")
    assert loss == pytest.approx(-(0.85 - 2) / 4)
    torch.testing.assert_close(grad, torch.tensor([0.0, -0.5 / 2 / 4, 2 / 4], dtype=torch.float64))
    assert m["clip_count"] == 1


def test_dr_grpo_divides_by_samples_times_max_tokens():
    loss, _, _ = run("dr_grpo")
    assert loss == pytest.approx(-(1.2 + 0.5 - 2) / (4 * 10))


def test_dapo_clip_higher_and_token_mean():
    # eps_high .28: token 0 -> 1.28; token 1 r=.5 -> min(.5, .8) = .5; token 2 -> -2
    loss, _, _ = run("dapo")
    assert loss == pytest.approx(-(1.28 + 0.5 - 2) / 3)


def test_gspo_uses_the_mean_log_ratio_per_sequence():
    # seq 0: mean log ratio (log 2 + log .5) / 2 = 0 -> s = 1; seq 1: s = 1; nothing clips
    loss, grad, m = run("gspo")
    assert loss == pytest.approx(-(1 * 1 + 1 * -2) / 4)
    # d s0 / d logp_t = s0 / 2 for both tokens of seq 0
    torch.testing.assert_close(grad, torch.tensor([-0.5 / 4, -0.5 / 4, 2 / 4], dtype=torch.float64))
    # with a summed ratio the gradient would double: check it does not
    assert m["clip_count"] == 0


def test_cispo_detaches_the_clipped_weight():
    # weights min(r, 1.28) = 1.28, .5, 1; obj = w A logp; grad = -w A / T
    loss, grad, m = run("cispo")
    expected = -(1.28 * 1 * LOGP[0] + 0.5 * 1 * LOGP[1] + 1 * -2 * LOGP[2]).item() / 3
    assert loss == pytest.approx(expected)
    torch.testing.assert_close(grad, torch.tensor([-1.28 / 3, -0.5 / 3, 2 / 3], dtype=torch.float64))
    assert m["clip_count"] == 1


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_world_size_factor_and_micro_batch_additivity(name):
    whole, _, _ = run(name)
    doubled, _, _ = run(name, StepNorms(4, 3, 10, torch.tensor([2, 1]), world_size=2))
    assert doubled == pytest.approx(2 * whole)
    fn = get_policy_loss(name)
    parts = [fn(LOGP[i], OLD[i], ADV[i], SEQ[i], ENT[i], NORMS)[0] for i in ([0, 1], [2])]
    assert sum(p.item() for p in parts) == pytest.approx(whole)


def test_unknown_loss_lists_the_registry():
    with pytest.raises(ValueError, match="valid: \\['cispo', 'dapo', 'dr_grpo', 'grpo', 'gspo', 'qed_nano'\\]"):
        get_policy_loss("ppo2")


REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.8])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_advantages_by_hand():
    valid = torch.ones(6, dtype=torch.bool)
    torch.testing.assert_close(get_advantage("group_mean")(REWARDS, GROUPS, valid),
                               torch.tensor([0.5, -0.5, 0.0, 0.0, -0.3, 0.3]))
    torch.testing.assert_close(get_advantage("group_std")(REWARDS, GROUPS, valid),
                               torch.tensor([1.0, -1.0, 0.0, 0.0, -1.0, 1.0]), atol=1e-4, rtol=0)
    batch_std = REWARDS.std(unbiased=False)
    torch.testing.assert_close(get_advantage("batch_std")(REWARDS, GROUPS, valid),
                               torch.tensor([0.5, -0.5, 0.0, 0.0, -0.3, 0.3]) / (batch_std + 1e-6))
    # RLOO with G = 2: R_i - R_other
    torch.testing.assert_close(get_advantage("rloo")(REWARDS, GROUPS, valid),
                               torch.tensor([1.0, -1.0, 0.0, 0.0, -0.6, 0.6]))


def test_invalid_samples_are_left_out_of_the_baseline():
    rewards = torch.tensor([1.0, 0.0, 0.0])  # the third failed to grade and is masked
    adv = get_advantage("group_mean")(rewards, torch.tensor([0, 0, 0]), torch.tensor([True, True, False]))
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.0]))


def test_zero_advantage_groups():
    adv = get_advantage("group_mean")(REWARDS, GROUPS, torch.ones(6, dtype=torch.bool))
    assert zero_advantage_groups(adv, GROUPS).tolist() == [False, False, True, True, False, False]


def test_token_logprobs_and_entropy_match_materialised_and_chunking():
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (7,))
    logp, ent = token_logprobs_and_entropy(hidden, weight, targets, temperature=0.8, chunk_size=3)
    (logp.sum() + 0.5 * ent.sum()).backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.t() / 0.8
    ref_logp = logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]
    ref_ent = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    (ref_logp.sum() + 0.5 * ref_ent.sum()).backward()
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(ent, ref_ent)
    torch.testing.assert_close(got[0], hidden.grad)
    torch.testing.assert_close(got[1], weight.grad)


# reference log-probs: d = ref - logp = 0, log 2, log .5 -> k3 = e^d - d - 1 = 0, 1 - ln 2, ln 2 - .5
REF = torch.tensor([math.log(0.5), math.log(0.4), math.log(0.45)], dtype=torch.float64)
K3 = torch.tensor([0.0, 1 - math.log(2), math.log(2) - 0.5], dtype=torch.float64)
DK3 = torch.tensor([0.0, -1.0, 0.5], dtype=torch.float64)  # d k3 / d logp = 1 - e^d


def test_kl_k3_by_hand():
    torch.testing.assert_close(kl_k3(LOGP, REF), K3)


@pytest.mark.parametrize("name,weights", [
    ("qed_nano", torch.tensor([1 / 4, 1 / 4, 1 / 4])),  # token sum / N
    ("grpo", torch.tensor([1 / 2 / 4, 1 / 2 / 4, 1 / 4])),  # token mean in its sequence, / N
    ("dr_grpo", torch.tensor([1 / 40, 1 / 40, 1 / 40])),  # / (N * max_tokens)
    ("dapo", torch.tensor([1 / 3, 1 / 3, 1 / 3])),  # / step tokens
    ("gspo", torch.tensor([1 / 2 / 4, 1 / 2 / 4, 1 / 4])),  # token mean in its sequence, / N
    ("cispo", torch.tensor([1 / 3, 1 / 3, 1 / 3])),
])
def test_kl_penalty_is_added_per_token_under_the_loss_normaliser(name, weights):
    weights = weights.double()
    plain, plain_grad, _ = run(name)
    loss, grad, m = run(name, ref_logp=REF, kl_coef=0.1)
    assert loss - plain == pytest.approx(0.1 * float((weights * K3).sum()))
    torch.testing.assert_close(grad - plain_grad, 0.1 * weights * DK3)
    assert float(m["kl_sum"]) == pytest.approx(float(K3.sum()))


def test_kl_coef_without_reference_is_an_error():
    with pytest.raises(ValueError, match="ref_logp"):
        run("dapo", kl_coef=0.1)


def test_token_logprobs_backward_is_exact_for_any_mix_of_outputs_and_inputs():
    # the custom backward against finite differences: logp and entropy weighted
    # differently, entropy alone, and a frozen head (no weight gradient)
    torch.manual_seed(1)
    hidden = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 13, (9,))

    def fn(h, w):
        return token_logprobs_and_entropy(h, w, targets, temperature=0.7, chunk_size=4)

    assert torch.autograd.gradcheck(lambda h, w: 1.3 * fn(h, w)[0].sum() + (fn(h, w)[1] * torch.arange(9)).sum(),
                                    (hidden, weight))
    assert torch.autograd.gradcheck(lambda h, w: fn(h, w)[1].sum(), (hidden, weight))
    assert torch.autograd.gradcheck(lambda h: fn(h, weight.detach())[0].sum(), (hidden,))


def test_batch_std_over_two_ranks_equals_the_whole_batch():
    """Groups never span ranks; the batch std must come from both ranks' rewards."""
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.5, 0.3, 0.3, 0.2, 0.25])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    valid = torch.ones(8, dtype=torch.bool)
    whole = get_advantage("batch_std")(rewards, groups, valid)
    shards = [(rewards[:4], groups[:4]), (rewards[4:], groups[4:] - 2)]
    r0, r1 = (rewards[:4].double(), rewards[4:].double())
    # what the all-reduce of both ranks' (count, sum, sum of squares) returns
    both = torch.stack([torch.tensor(8.0, dtype=torch.float64), r0.sum() + r1.sum(), (r0 * r0).sum() + (r1 * r1).sum()])
    per_rank = [get_advantage("batch_std")(r, g, valid[:4], reduce=lambda t: both) for r, g in shards]
    torch.testing.assert_close(torch.cat(per_rank), whole)
    alone = get_advantage("batch_std")(rewards[:4], groups[:4], valid[:4])
    assert not torch.allclose(alone, whole[:4])  # a rank's own std would be wrong


def test_qed_nano_clips_a_ratio_above_five_only_for_positive_advantages():
    # ratios 6, 6, 2 (eps 4: the clip range is [-3, 5], so only r > 5 can bind)
    logp = torch.tensor([math.log(0.6), math.log(0.6), math.log(0.2)], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([math.log(0.1), math.log(0.1), math.log(0.1)], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.25], dtype=torch.float64)
    ent = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64, requires_grad=True)
    loss, m = get_policy_loss("qed_nano")(logp, old, adv, SEQ, ent, NORMS)
    loss.backward()
    # A > 0, r = 6: min(6, 5) = 5, clipped; A < 0, r = 6: min(-6, -5) = -6, unclipped; r = 2: 0.5
    assert loss.item() == pytest.approx(-(5 - 6 + 0.5 + 1e-4 * 0.6) / 4)
    # d(-obj / N) / dlogp = -r A / N where unclipped, 0 through the clipped ratio
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 6 / 4, -0.5 / 4], dtype=torch.float64))
    # the entropy bonus carries gradient: d loss / d H = -entropy_coef / N
    torch.testing.assert_close(ent.grad, torch.full((3,), -1e-4 / 4, dtype=torch.float64))
    assert m["clip_count"] == 1


def test_qed_nano_entropy_bonus_moves_the_logits():
    # one token, vocabulary of 3, LM head = identity: logits z = (0, 0, ln 2), p = (1/4, 1/4, 1/2)
    z = torch.tensor([[0.0, 0.0, math.log(2)]], dtype=torch.float64, requires_grad=True)
    logp, ent = token_logprobs_and_entropy(z, torch.eye(3, dtype=torch.float64), torch.tensor([2]), temperature=1.0)
    assert ent.item() == pytest.approx(1.5 * math.log(2))  # H = -(2/4 ln 1/4 + 1/2 ln 1/2)
    norms = StepNorms(samples=1, tokens=1, max_tokens=4, seq_lengths=torch.tensor([1]))
    loss, _ = get_policy_loss("qed_nano")(logp, logp.detach(), torch.ones(1, dtype=torch.float64),
                                          torch.tensor([0]), ent, norms, entropy_coef=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(-(1 + 0.5 * 1.5 * math.log(2)))
    # d(-r A)/dz = -(onehot - p) = (1/4, 1/4, -1/2); d(-0.5 H)/dz = 0.5 p (log p + H) = 0.5 ln 2 (-1/8, -1/8, 1/4)
    ln2 = math.log(2)
    want = torch.tensor([[1 / 4 - ln2 / 16, 1 / 4 - ln2 / 16, -1 / 2 + ln2 / 8]], dtype=torch.float64)
    torch.testing.assert_close(z.grad, want)


def test_gspo_clip_count_counts_the_tokens_of_clipped_sequences():
    # seq 0 (2 tokens): log ratios ln 2, ln 2 -> s = 2, A = 1 > 1 + eps_high: clipped;
    # seq 1 (1 token): s = 1, not clipped. Share of tokens 2/3 (of sequences 1/2)
    logp = torch.tensor([math.log(0.4), math.log(0.2), math.log(0.9)], dtype=torch.float64)
    old = torch.tensor([math.log(0.2), math.log(0.1), math.log(0.9)], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)
    norms = StepNorms(samples=2, tokens=3, max_tokens=10, seq_lengths=torch.tensor([2, 1]))
    _, m = get_policy_loss("gspo")(logp, old, adv, SEQ, ENT, norms)
    assert m["clip_count"] == 2 and m["token_count"] == 3
    # the per-micro-batch sums add up over micro-batches: each holds whole sequences
    parts = [get_policy_loss("gspo")(logp[i], old[i], adv[i], SEQ[i], ENT[i], norms)[1] for i in ([0, 1], [2])]
    assert sum(float(p["clip_count"]) for p in parts) == 2
    totals = {k: float(v) for k, v in m.items()} | {"loss": 0.0, "gap_sum": 0.0, "gap_max": 0.0}
    group = [Completion([5], [6, 7], [-1.0, -1.0], "stop", "x", 0), Completion([5], [8], [-1.0], "stop", "y", 0)]
    rollouts = build_rollout_batch([Problem("a", "A")], [group], [Verdict(7), Verdict(0)], torch.tensor([1.0, 0.0]),
                                   torch.ones(2, dtype=torch.bool), pad_id=0)
    out = step_metrics(rollouts, torch.tensor([0.5, -0.5]), torch.ones(2, dtype=torch.bool), totals, 0.0, True,
                       1e-6, {"rollout": 1.0, "train": 1.0, "sync": 0.0, "drain": 0.0})
    assert out["train/clip_fraction"] == pytest.approx(2 / 3)
