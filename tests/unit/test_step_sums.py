"""Step-level counts are summed over ranks without losing tokens: a paper step has up to
1024 x 49,152 ~ 5e7 completion tokens, past float32's exact integers (2^24)."""
from types import SimpleNamespace

from qed_lightning.modules.grpo import GRPOModule


def test_a_step_token_count_above_two_to_the_24_stays_exact():
    module = SimpleNamespace(_sum_tensor=lambda t: t + t)  # two ranks holding the same count
    assert GRPOModule._sum(module, 2**24 + 1) == 2 * (2**24 + 1)
    assert GRPOModule._sum(module, 50_331_647) == 100_663_294
