"""The RL log-prob pass under ``bf16-mixed`` (fp32 master weights, autocast to bf16):
the LM-head projections run in bf16 with the head cast once per pass, and the head's
gradient is the fp32 sum of the bf16 products, so it is not rounded to bf16."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy

M, H, V, CHUNK, T = 10, 16, 50, 4, 0.8  # 3 chunks


class MatmulLog(TorchDispatchMode):
    """Records every matmul and every copy of a [V, H] tensor."""

    def __init__(self):
        super().__init__()
        self.matmuls, self.head_casts = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        tensors = [a for a in args if torch.is_tensor(a)]
        if name in ("mm", "addmm", "addmm_"):
            self.matmuls.append((name, [t.clone() for t in tensors]))
        if name == "_to_copy" and tuple(tensors[0].shape) == (V, H):
            self.head_casts.append(out.dtype)
        return out


def inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(M, H, generator=g)  # [M, H]
    weight = torch.randn(V, H, generator=g) * 0.5  # [V, H]
    targets = torch.randint(0, V, (M,), generator=g)  # [M]
    c_lp, c_ent = torch.randn(M, generator=g), torch.randn(M, generator=g)  # [M]: upstream gradients
    return (hidden.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_(), targets, c_lp, c_ent)


def run(hidden, weight, targets, c_lp, c_ent):
    logp, ent = token_logprobs_and_entropy(hidden, weight, targets, T, CHUNK)
    ((logp * c_lp).sum() + (ent * c_ent).sum()).backward()
    return logp.detach(), ent.detach(), hidden.grad, weight.grad


def test_autocast_projects_in_bf16_and_keeps_the_head_gradient_fp32():
    hidden, weight, targets, c_lp, c_ent = inputs()
    log = MatmulLog()
    with torch.autocast("cpu", dtype=torch.bfloat16), log:
        logp, ent, g_h, g_w = run(hidden, weight, targets, c_lp, c_ent)

    # the same bf16 arithmetic as bf16 inputs without autocast, except the head
    # gradient's final rounding to the bf16 weight's dtype
    b_hidden, b_weight, *_ = inputs(torch.bfloat16)
    b_logp, b_ent, b_gh, b_gw = run(b_hidden, b_weight, targets, c_lp, c_ent)
    assert torch.equal(logp, b_logp) and torch.equal(ent, b_ent)
    assert g_h.dtype == g_w.dtype == torch.float32
    assert torch.equal(g_h.to(torch.bfloat16), b_gh)
    assert torch.equal(g_w.to(torch.bfloat16), b_gw)
    assert (g_w != g_w.to(torch.bfloat16).float()).float().mean() > 0.9  # not rounded to bf16

    # the head is cast to bf16 once in forward and once in backward, not once per chunk
    assert log.head_casts == [torch.bfloat16, torch.bfloat16]
    for name, operands in log.matmuls:
        a, b = operands[-2:]
        if name == "mm":
            assert a.dtype == b.dtype == torch.bfloat16
        else:  # the head gradient: an fp32 sum of products of bf16 values
            assert operands[0].dtype == torch.float32
            assert all(torch.equal(x, x.to(torch.bfloat16).float()) for x in (a, b))
    assert len(log.matmuls) == 3 * 4  # 3 chunks: forward, recompute, grad_h, grad_w


def test_without_autocast_fp32_stays_fp32():
    hidden, weight, targets, c_lp, c_ent = inputs()
    log = MatmulLog()
    with log:
        run(hidden, weight, targets, c_lp, c_ent)
    assert log.head_casts == []
    assert all(t.dtype == torch.float32 for _, operands in log.matmuls for t in operands)

