"""Groups whose valid rewards are all equal get advantages of exactly 0, for every
reward k/7 and every advantage function, so ``filter_zero_advantage_groups`` finds them
(a float32 group mean of 16 rewards of 3/7 is not 3/7: the advantages came out ~1e-7,
+-0.15 after a std normalisation)."""
import pytest
import torch

from qed_lightning.losses.advantages import ADVANTAGES, zero_advantage_groups


def batch(k: int):
    """Group 0: 16 rewards k/7; group 1: 15 rewards k/7 and one masked sample (a failed
    grading) with another reward; group 2: 16 rewards that differ (0..7 /7, twice)."""
    rewards = torch.cat([torch.full((16,), k / 7), torch.full((16,), k / 7), torch.arange(16) % 8 / 7]).float()
    rewards[31] = (k + 3) % 8 / 7
    valid = torch.ones(48, dtype=torch.bool)
    valid[31] = False
    groups = torch.arange(48) // 16
    return rewards, groups, valid


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
@pytest.mark.parametrize("k", range(8))
def test_equal_rewards_give_exactly_zero_advantages(name, k):
    rewards, groups, valid = batch(k)
    adv = ADVANTAGES[name](rewards, groups, valid)  # [48]
    assert adv.dtype == rewards.dtype
    assert (adv[:32] == 0).all(), adv[:32].abs().max().item()
    assert (adv[32:] != 0).all()  # the mixed group keeps its signal
    assert zero_advantage_groups(adv, groups).tolist() == [True] * 32 + [False] * 16


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
@pytest.mark.parametrize("k", range(8))
def test_a_step_of_equal_groups_only(name, k):
    # every group equal: batch_std's step std is 0 too, and nothing may divide 1e-7 by eps
    rewards = torch.full((32,), k / 7)
    groups = torch.arange(32) // 16
    adv = ADVANTAGES[name](rewards, groups, torch.ones(32, dtype=torch.bool))
    assert (adv == 0).all(), adv.abs().max().item()


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_mixed_groups_match_a_float64_reference(name):
    rewards, groups, valid = batch(3)
    r = rewards[32:].double()  # the mixed group: every sample valid
    centred = r - r.mean()
    ref = {"group_mean": centred, "group_std": centred / (r.std(unbiased=False) + 1e-6),
           "rloo": centred * 16 / 15,
           "batch_std": centred / (rewards[valid].double().std(unbiased=False) + 1e-6)}[name]
    torch.testing.assert_close(ADVANTAGES[name](rewards, groups, valid)[32:], ref.float(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_equal_groups_are_exact_beyond_float64_rounding(name):
    # in float64 too, 0.1 + 0.1 + 0.1 = 0.30000000000000004 and its mean is not 0.1: the
    # equal-group check, not the precision, makes these advantages 0
    # the masked rewards of group 0 (one above, one below) do not count
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.05, 0.0, 1.0, 0.25], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    valid = torch.tensor([True, True, True, False, False, True, True, True])
    adv = ADVANTAGES[name](rewards, groups, valid)
    assert adv.dtype == torch.float64 and (adv[:5] == 0).all() and (adv[5:] != 0).all()
