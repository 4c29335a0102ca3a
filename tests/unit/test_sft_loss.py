"""The chunked fused LM-head cross-entropy against plain autograd through
``F.cross_entropy``: values, counts, gradients, memory shape, and the registry."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from qed_lightning.losses import (
    SFT_LOSSES,
    chunked_linear_cross_entropy,
    get_sft_loss,
    liger_available,
    liger_linear_cross_entropy,
    reference_linear_cross_entropy,
)

IGNORE = -100
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
}


def make_inputs(n=37, h=16, v=29, dtype=torch.float64, bias=False, seed=0, ignore=(3, 4, 5, 17, 30)):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g, dtype=torch.float64) / math.sqrt(h)).to(dtype).requires_grad_()
    b = (torch.randn(v, generator=g, dtype=torch.float64) * 0.1).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    labels[list(ignore)] = IGNORE
    return hidden, weight, b, labels


def loss_and_grads(fn, hidden, weight, bias, labels, scale=1.0, **kw):
    """Loss, count and grads of ``scale * loss`` w.r.t. fresh leaf copies of the inputs."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (hidden, weight, bias)]
    h, w, b = leaves
    loss, count = fn(h, w, labels, bias=b, **kw)
    (loss * scale).backward()
    grads = [t.grad if t is not None else None for t in leaves]
    return loss.detach(), count, grads


def direct_cross_entropy(hidden, weight, bias, labels):
    """The textbook definition, independent of the code under test."""
    logits = hidden.detach() @ weight.detach().t()  # [N, V]
    if bias is not None:
        logits = logits + bias.detach()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("chunk", [1, 8, 37, 64], ids=lambda c: f"chunk{c}")
def test_chunked_matches_autograd_of_cross_entropy(dtype, with_bias, chunk):
    hidden, weight, bias, labels = make_inputs(dtype=dtype, bias=with_bias)
    ref_loss, ref_count, ref_grads = loss_and_grads(reference_linear_cross_entropy, hidden, weight, bias, labels)
    loss, count, grads = loss_and_grads(
        chunked_linear_cross_entropy, hidden, weight, bias, labels, chunk_size=chunk
    )

    tol = TOL[dtype]
    assert loss.shape == () and loss.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, **tol)
    torch.testing.assert_close(loss, direct_cross_entropy(hidden, weight, bias, labels), **tol)
    assert count.dtype == torch.int64 and count.shape == ()
    assert count.item() == ref_count.item() == 37 - 5
    for got, want in zip(grads, ref_grads):
        if want is None:
            assert got is None
            continue
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **tol)


def test_ignored_rows_get_zero_hidden_grad():
    hidden, weight, _, labels = make_inputs()
    _, _, (gh, _, _) = loss_and_grads(chunked_linear_cross_entropy, hidden, weight, None, labels, chunk_size=8)
    ignored = labels == IGNORE
    assert torch.all(gh[ignored] == 0)
    assert torch.all(gh[~ignored].abs().sum(1) > 0)


def test_custom_ignore_index_and_int32_labels():
    hidden, weight, bias, labels = make_inputs(bias=True)
    # 7 becomes the ignore value: the rows that were -100 plus any genuine 7s
    labels = torch.where(labels == IGNORE, torch.full_like(labels, 7), labels)
    labels32 = labels.to(torch.int32)
    ref_loss, ref_count, ref_grads = loss_and_grads(
        reference_linear_cross_entropy, hidden, weight, bias, labels, ignore_index=7
    )
    loss, count, grads = loss_and_grads(
        chunked_linear_cross_entropy, hidden, weight, bias, labels32, ignore_index=7, chunk_size=5
    )
    torch.testing.assert_close(loss, ref_loss, **TOL[torch.float64])
    assert count.item() == ref_count.item() == int((labels != 7).sum())
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("fn", [chunked_linear_cross_entropy, reference_linear_cross_entropy])
def test_all_ignored_gives_zero_loss_count_and_grads(fn):
    hidden, weight, bias, labels = make_inputs(n=12, bias=True, ignore=range(12))
    loss, count, grads = loss_and_grads(fn, hidden, weight, bias, labels)
    assert loss.item() == 0.0
    assert count.item() == 0
    for g, like in zip(grads, (hidden, weight, bias)):
        assert g is not None and g.shape == like.shape
        assert torch.all(g == 0)


def test_grad_output_scales_gradients():
    hidden, weight, bias, labels = make_inputs(bias=True)
    _, _, grads1 = loss_and_grads(chunked_linear_cross_entropy, hidden, weight, bias, labels, chunk_size=8)
    _, _, grads3 = loss_and_grads(
        chunked_linear_cross_entropy, hidden, weight, bias, labels, scale=3.0, chunk_size=8
    )
    for g1, g3 in zip(grads1, grads3):
        torch.testing.assert_close(g3, 3 * g1, **TOL[torch.float64])


def test_mean_over_count_matches_cross_entropy_mean():
    hidden, weight, _, labels = make_inputs()
    h1, w1 = (t.detach().clone().requires_grad_() for t in (hidden, weight))
    loss, count = chunked_linear_cross_entropy(h1, w1, labels, chunk_size=8)
    (loss / count).backward()
    h2, w2 = (t.detach().clone().requires_grad_() for t in (hidden, weight))
    F.cross_entropy(h2 @ w2.t(), labels, ignore_index=IGNORE).backward()
    torch.testing.assert_close(h1.grad, h2.grad, **TOL[torch.float64])
    torch.testing.assert_close(w1.grad, w2.grad, **TOL[torch.float64])


def test_second_backward_through_retained_graph_is_refused_not_compounded():
    # The gradients computed in forward are handed to autograd (no [V, H] copy), so a
    # second backward cannot be answered correctly: it must fail loudly, never return
    # rescaled or compounded gradients.
    hidden, weight, bias, labels = make_inputs(bias=True)
    h, w, b = (t.detach().clone().requires_grad_() for t in (hidden, weight, bias))
    loss, _ = chunked_linear_cross_entropy(h, w, labels, bias=b, chunk_size=8)
    (loss * 2).backward(retain_graph=True)
    first = [t.grad.clone() for t in (h, w, b)]
    with pytest.raises(RuntimeError, match="one backward per forward"):
        (loss * 2).backward()
    for t, g in zip((h, w, b), first):
        torch.testing.assert_close(t.grad, g, rtol=0, atol=0)


def test_hand_computed_two_class_case():
    # With W = I the logits are the hidden state itself: z = (a, b), so
    # CE(target 0) = log(1 + e^{-(a-b)}) and dCE/dz = softmax(z) - onehot(0) = (-p1, p1).
    a, b = 2.0, -0.5
    d = a - b
    hidden = torch.tensor([[a, b], [a, b], [a, b]], dtype=torch.float64, requires_grad=True)
    weight = torch.eye(2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, IGNORE, 1])
    loss, count = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=2)
    loss.backward()

    p1 = 1.0 / (1.0 + math.exp(d))  # softmax mass on class 1
    expected = math.log1p(math.exp(-d)) + math.log1p(math.exp(d))  # rows 0 and 2
    assert count.item() == 2
    assert loss.item() == pytest.approx(expected, rel=1e-14)
    expected_gh = torch.tensor([[-p1, p1], [0.0, 0.0], [1 - p1, -(1 - p1)]], dtype=torch.float64)
    torch.testing.assert_close(hidden.grad, expected_gh, rtol=1e-14, atol=1e-14)
    # dW = grad_z^T @ hidden, with hidden rows all (a, b)
    gz_sum = expected_gh.sum(0)
    torch.testing.assert_close(weight.grad, torch.outer(gz_sum, torch.tensor([a, b], dtype=torch.float64)))


def test_keeps_no_tensor_of_logits_size_and_hands_over_the_weight_gradient():
    n, h, v = 64, 8, 50  # H < N and H < V, so only the logits could reach N*V elements
    hidden, weight, bias, labels = make_inputs(n=n, h=h, v=v, dtype=torch.float32, bias=True, ignore=(1,))
    packed: list[tuple[int, ...]] = []

    def pack(t):
        packed.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = chunked_linear_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=16)
    kept = [tuple(g.shape) for g in loss.grad_fn.grads]
    assert packed == [], "nothing goes through save_for_backward"
    assert all(math.prod(s) < n * v for s in kept), kept
    assert sorted(kept) == sorted([(n, h), (v, h), (v,)])
    kept_weight_grad = loss.grad_fn.grads[1].data_ptr()
    loss.backward()
    # Autograd adopted the kept buffer as .grad: no second [V, H] copy was made.
    assert weight.grad.data_ptr() == kept_weight_grad


def test_never_allocates_full_logits():
    dispatch = pytest.importorskip("torch.utils._python_dispatch")
    n, h, v, chunk = 64, 8, 50, 16
    hidden, weight, bias, labels = make_inputs(n=n, h=h, v=v, dtype=torch.float32, bias=True, ignore=(1,))
    biggest = [0]

    class MaxNumel(dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    biggest[0] = max(biggest[0], t.numel())
            return out

    with MaxNumel():
        loss, _ = chunked_linear_cross_entropy(hidden, weight, labels, bias=bias, chunk_size=chunk)
        loss.backward()
    assert biggest[0] <= max(chunk * v, n * h, v * h) < n * v


def test_bf16_inputs_project_in_bf16_and_softmax_in_fp32():
    hidden, weight, bias, labels = make_inputs(n=40, h=32, v=64, dtype=torch.bfloat16, bias=True)
    loss, count, grads = loss_and_grads(chunked_linear_cross_entropy, hidden, weight, bias, labels, chunk_size=16)
    assert loss.dtype == torch.float32
    assert [g.dtype for g in grads] == [torch.bfloat16] * 3
    # The reference also projects in bf16 and upcasts the logits; it adds the bias in
    # bf16 where chunked adds it in fp32, hence 1e-3 rather than exact.
    bf16_loss, _, _ = loss_and_grads(reference_linear_cross_entropy, hidden, weight, bias, labels)
    torch.testing.assert_close(loss, bf16_loss.float(), rtol=1e-3, atol=1e-3)
    # Against fp32 math on the same values only bf16 rounding of logits/grads is left.
    up = [t.detach().float() for t in (hidden, weight, bias)]
    ref_loss, _, ref_grads = loss_and_grads(reference_linear_cross_entropy, *up, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-2, atol=1e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


def test_autocast_does_not_lower_precision():
    hidden, weight, bias, labels = make_inputs(dtype=torch.float32, bias=True)
    plain, _, plain_grads = loss_and_grads(chunked_linear_cross_entropy, hidden, weight, bias, labels, chunk_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast, _, cast_grads = loss_and_grads(
            chunked_linear_cross_entropy, hidden, weight, bias, labels, chunk_size=8
        )
    torch.testing.assert_close(cast, plain, rtol=0, atol=0)
    for got, want in zip(cast_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_only_requested_grads_and_no_grad_mode():
    hidden, weight, _, labels = make_inputs()
    frozen = hidden.detach()
    w = weight.detach().clone().requires_grad_()
    loss, _ = chunked_linear_cross_entropy(frozen, w, labels, chunk_size=8)
    loss.backward()
    _, _, (_, ref_gw, _) = loss_and_grads(reference_linear_cross_entropy, hidden, weight, None, labels)
    torch.testing.assert_close(w.grad, ref_gw, **TOL[torch.float64])

    with torch.no_grad():
        loss_ng, count_ng = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=8)
    assert loss_ng.grad_fn is None and not loss_ng.requires_grad
    torch.testing.assert_close(loss_ng, loss.detach(), **TOL[torch.float64])
    assert count_ng.item() == 32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden=torch.zeros(2, 3, 4)), "hidden must be"),
        (dict(weight=torch.zeros(5, 7)), "weight must be"),
        (dict(labels=torch.zeros(3, dtype=torch.long)), "labels must be"),
        (dict(labels=torch.zeros(4)), "integer"),
        (dict(bias=torch.zeros(4)), "bias must be"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    args = dict(
        hidden=torch.zeros(4, 3), weight=torch.zeros(5, 3), labels=torch.zeros(4, dtype=torch.long), bias=None
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        chunked_linear_cross_entropy(
            args.pop("hidden"), args.pop("weight"), args.pop("labels"), **args
        )


def test_registry():
    assert get_sft_loss("chunked") is chunked_linear_cross_entropy
    assert get_sft_loss("reference") is reference_linear_cross_entropy
    assert get_sft_loss("liger") is liger_linear_cross_entropy
    assert set(SFT_LOSSES) == {"chunked", "reference", "liger"}
    with pytest.raises(ValueError, match=r"unknown SFT loss 'fused'.*'chunked'.*'liger'.*'reference'"):
        get_sft_loss("fused")


def test_importing_losses_does_not_import_liger_kernel():
    code = "import sys, qed_lightning.losses; print('liger_kernel' in sys.modules, 'triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_liger_refuses_cpu_tensors_with_a_clear_error():
    if not liger_available():
        pytest.skip("liger-kernel not installed")
    hidden, weight, _, labels = make_inputs(dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"needs a CUDA device.*'chunked'"):
        get_sft_loss("liger")(hidden, weight, labels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_liger_matches_reference_on_cuda(dtype, with_bias):
    if not liger_available():
        pytest.skip("liger-kernel not installed")
    n, h, v = 300, 64, 1000
    hidden, weight, bias, labels = make_inputs(
        n=n, h=h, v=v, dtype=torch.float32, bias=with_bias, ignore=range(50, 120)
    )
    on_gpu = [t.detach().to("cuda", dtype) if t is not None else None for t in (hidden, weight, bias)]
    labels = labels.cuda()
    loss, count, grads = loss_and_grads(liger_linear_cross_entropy, *on_gpu, labels, scale=0.5)
    # fp32 reference on the same (possibly bf16-rounded) values
    up = [t.float() if t is not None else None for t in on_gpu]
    ref_loss, ref_count, ref_grads = loss_and_grads(reference_linear_cross_entropy, *up, labels, scale=0.5)
    chk_loss, _, chk_grads = loss_and_grads(chunked_linear_cross_entropy, *on_gpu, labels, scale=0.5)
    same_dtype_loss, _, _ = loss_and_grads(reference_linear_cross_entropy, *on_gpu, labels, scale=0.5)

    assert count.item() == ref_count.item() == n - 70
    loose = dtype == torch.bfloat16
    torch.testing.assert_close(loss.float(), ref_loss, rtol=2e-2 if loose else 1e-4, atol=1e-2 if loose else 1e-4)
    # chunked and the reference both project in the input dtype, then softmax in fp32
    torch.testing.assert_close(chk_loss, same_dtype_loss.float(), rtol=1e-4, atol=1e-4)
    for got, chk, want in zip(grads, chk_grads, ref_grads):
        if want is None:
            continue
        assert got.dtype == dtype
        g_tol = dict(rtol=5e-2, atol=5e-2) if loose else dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.float(), want, **g_tol)
        torch.testing.assert_close(chk.float(), want, **g_tol)
