"""GRPOModule's micro-batch path against an independent reference built from the
rollout batch itself: a plain Hugging Face forward on each [prompt + completion]
sequence, logits / temperature, the log-probs of the completion tokens at positions
len(prompt) - 1 ... end - 1, QED-Nano's PPO-min against the *engine's* log-probs (which
differ from the trainer's), the entropy bonus, and the step's sample count as the
normaliser. Packing, ``predict_at``, the alignment of the sampling log-probs, the
mismatch correction and the temperature are all checked against it."""
import pytest
import torch

from qed_lightning.contracts import Completion, Problem, Verdict
from qed_lightning.judging import RuleJudge
from qed_lightning.losses.advantages import group_mean
from qed_lightning.losses.policy import StepNorms
from qed_lightning.modules import GRPOModule
from qed_lightning.rollouts.batch import build_rollout_batch
from qed_lightning.rollouts.microbatch import pack_rollouts

TEMPERATURE = 0.8
EPS = 4.0
ENTROPY_COEF = 0.01
REWARDS = torch.tensor([1.0, 0.0, 3 / 7, 2 / 7, 6 / 7, 4 / 7])
KEEP = torch.tensor([True, True, True, True, False, True])  # sample 4 counts nowhere


@pytest.fixture(scope="module")
def module(tiny_model_dir):
    m = GRPOModule(model=str(tiny_model_dir), judge=RuleJudge("qed_lightning.judging.rules:contains_letter_e"),
                   loss="qed_nano", loss_args={"eps": EPS, "entropy_coef": ENTROPY_COEF},
                   sampling={"temperature": TEMPERATURE, "max_tokens": 8, "n": 3})
    m.configure_model()
    m.policy.double()  # float64: the packed and the plain forwards agree to ~1e-15, so tolerances stay tight
    return m


def reference_logp_entropy(policy, prompt, completion):
    """[K] log-probs of the completion tokens and [K] entropies, from one plain forward."""
    ids = torch.tensor([prompt + completion])  # [1, P + K]
    logits = policy(input_ids=ids, use_cache=False).logits[0] / TEMPERATURE  # [P + K, V]
    at = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)  # [K]: position p-1 predicts token p
    logq = logits[at].log_softmax(-1)  # [K, V]
    logp = logq.gather(-1, torch.tensor(completion)[:, None])[:, 0]  # [K]
    entropy = -(logq.exp() * logq).sum(-1)  # [K]
    return logp, entropy


def rollouts(policy):
    """Two prompts x three made-up completions; the engine's log-probs are the trainer's
    moved by -2.5 ... +1 nats per token, so PPO ratios run from e^-1 to e^2.5 (some
    above 1 + eps = 5)."""
    g = torch.Generator().manual_seed(0)
    groups = []
    for p in range(2):
        prompt = torch.randint(3, 800, (5 + p,), generator=g).tolist()
        group = []
        for k in range(3):
            comp = torch.randint(3, 800, (3 + 2 * k,), generator=g).tolist()
            with torch.no_grad():
                trainer_logp, _ = reference_logp_entropy(policy, prompt, comp)
            engine_logp = trainer_logp - 2.5 + 3.5 * torch.rand(len(comp), generator=g)  # [K]
            group.append(Completion(prompt, comp, engine_logp.tolist(), "stop", "x", 0))
        groups.append(group)
    batch = build_rollout_batch([Problem("a", "A"), Problem("b", "B")], groups, [Verdict(0)] * 6, REWARDS,
                                torch.ones(6, dtype=torch.bool), pad_id=0)
    return batch, group_mean(REWARDS, batch.group_ids, batch.reward_mask)


def norms_for(batch, keep):
    lengths = torch.where(keep, batch.completion_mask.sum(1), 0)  # [N]
    return StepNorms(samples=batch.num_samples, tokens=int(lengths.sum()), max_tokens=8, seq_lengths=lengths)


def reference_step(policy, batch, adv, keep):
    """Loss, gradients, clipped-token count and |trainer - engine| log-prob gaps of the step."""
    policy.zero_grad(set_to_none=True)
    objective, clipped, gaps = 0.0, 0, []
    for i, c in enumerate(batch.completions):
        if not keep[i]:
            continue
        logp, entropy = reference_logp_entropy(policy, c.prompt_ids, c.completion_ids)  # [K], [K]
        engine = torch.tensor(c.logprobs)  # [K]
        ratio = (logp - engine).exp()  # [K]
        a = float(adv[i])
        surrogate = torch.minimum(ratio * a, ratio.clamp(1 - EPS, 1 + EPS) * a)  # [K]
        clipped += int((ratio.clamp(1 - EPS, 1 + EPS) * a < ratio * a).sum())
        objective = objective + (surrogate + ENTROPY_COEF * entropy).sum()
        gaps.append((logp.detach() - engine).abs())
    loss = -objective / batch.num_samples
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads, clipped, torch.cat(gaps)


def module_step(module, batch, adv, keep, budget):
    """The same step through GRPOModule's packing and micro-batch loss."""
    module.policy.zero_grad(set_to_none=True)
    norms = norms_for(batch, keep)
    total, clipped, tokens, gaps = 0.0, 0.0, 0.0, []
    micro = pack_rollouts(batch, adv, keep, budget, pad_id=0)
    for mb in micro:
        loss, metrics, diff = module._micro_loss(mb, norms)  # diff: trainer - engine log-probs, [M]
        loss.backward()
        total += float(loss.detach())
        clipped += float(metrics["clip_count"])
        tokens += float(metrics["token_count"])
        gaps.append(diff.abs())
    grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
    return total, grads, clipped, tokens, torch.cat(gaps), len(micro)


@pytest.mark.parametrize("budget", [64, 20])
def test_micro_batches_match_a_plain_forward_on_each_sequence(module, budget):
    batch, adv = rollouts(module.policy)
    want_loss, want_grads, want_clipped, want_gaps = reference_step(module.policy, batch, adv, KEEP)
    assert want_clipped > 0  # the reference exercises the eps = 4 clip
    loss, grads, clipped, tokens, gaps, n_micro = module_step(module, batch, adv, KEEP, budget)
    assert n_micro == (1 if budget == 64 else 3)  # 20: two rows hold two samples each
    assert tokens == int(batch.completion_mask[KEEP].sum())  # completion tokens of kept samples only
    assert clipped == want_clipped
    assert loss == pytest.approx(want_loss, rel=1e-10, abs=1e-12)
    # the gap per token, as a multiset (packing reorders samples): |trainer - engine|
    torch.testing.assert_close(gaps.sort().values, want_gaps.sort().values, rtol=1e-9, atol=1e-12)
    assert want_grads.keys() == grads.keys()
    for name in want_grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-8, atol=1e-12)
