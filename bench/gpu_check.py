"""GPU check for a lent H100/H200: Liger kernels against qed's own code paths.

(a) LM head + cross-entropy at V=151936, H=2560, T=4096/8192 in bf16: Liger's fused
    linear cross-entropy (through qed's ``liger`` loss), qed's
    ``chunked_linear_cross_entropy`` and the materialised reference; fwd+bwd time,
    peak ``torch.cuda.max_memory_allocated`` over the inputs, and loss/gradient error
    against an fp32 materialised computation.
(b) Liger RMSNorm against Hugging Face's Qwen3RMSNorm: fwd+bwd time and max diffs.
(c) A Qwen3-4B-shaped model (random init, bf16, no download), one packed 8k-token
    SFT step with gradient checkpointing and AdamW: qed's chunked loss without Liger,
    then Liger-patched with the ``liger`` loss (and with the chunked loss): tokens/s,
    MFU, peak memory.
(d) GRPO: qed's chunked log-prob pass (``token_logprobs_and_entropy``) + the
    ``qed_nano`` loss against materialised [T, V] logits + the same loss at T=8192,
    V=151936, H=2560, bf16 (fwd+bwd time, peak memory, error against fp32); then a
    GRPOModule-style micro-step on the part (c) model (one packed 8k-token row built by
    qed's ``pack_rollouts``, body forward, log-probs at the predicting positions,
    ``qed_nano``, backward, AdamW) with each log-prob pass. Runs before (c), whose Liger
    patch is module-wide.

The multi-process parts (FSDP2 layer-by-layer weight push on 1..N GPUs; RL and SFT
runs under DDP, FSDP2 and ZeRO-3) need ``torchrun`` or several GPUs and live in
``bench/gpu_dist.py``; run them after this script when a machine has them.

Made for the GPU image (torch CUDA, transformers, lightning, triton; no liger-kernel,
no network): ``src/`` is put on ``sys.path`` here, and ``--liger-wheel PATH`` pip-installs
a carried liger-kernel wheel with ``--no-deps``. Without CUDA it prints
"no CUDA device: nothing to check" and exits 0. Results: a markdown table printed and
written to ``<out>/gpu_check.md`` and ``<out>/gpu_check.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import importlib.util
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from harness import REPO, dist_version, fmt, median_seconds, write_results

sys.path.insert(0, str(REPO / "src"))

GIB = 1024 ** 3
# "cuda" on the GPU machine; the hidden --cpu-smoke flag sets "cpu" to exercise the
# code paths at toy sizes on a machine without a GPU (numbers then mean nothing).
DEVICE = "cuda"
# Dense bf16 peak (no sparsity) by card-name substring, checked in order.
PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12)]
NOT_INSTALLED = "liger-kernel not installed"


# --------------------------------------------------------------------------- setup


def install_liger(wheel: str | None) -> str:
    """Installs a carried liger-kernel wheel (no deps) when liger is not importable."""
    if importlib.util.find_spec("liger_kernel") is not None:
        return "already installed"
    if not wheel:
        return "no --liger-wheel given"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", wheel],
                          capture_output=True, text=True)
    importlib.invalidate_caches()
    if proc.returncode != 0:
        return f"pip install failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
    return f"installed {Path(wheel).name}"


def liger_ok() -> tuple[bool, str]:
    try:
        import liger_kernel.transformers.functional  # noqa: F401
        import liger_kernel
    except Exception as err:  # Triton import problems are not always ImportError
        if importlib.util.find_spec("liger_kernel") is None:
            return False, NOT_INSTALLED
        return False, f"liger-kernel does not import: {type(err).__name__}: {err}"
    return True, getattr(liger_kernel, "__version__", "") or dist_version("liger-kernel", missing="?")


def load_lm_loss():
    """``CausalLMWithLoss``; loaded from its file if the package's ``modules/__init__``
    (which pulls in Lightning and torchmetrics) does not import in this image."""
    try:
        from qed_lightning.modules.lm_loss import CausalLMWithLoss

        return CausalLMWithLoss
    except Exception:
        path = REPO / "src" / "qed_lightning" / "modules" / "lm_loss.py"
        spec = importlib.util.spec_from_file_location("_qed_lm_loss", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.CausalLMWithLoss


def sync():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    import torch

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def mem_allocated() -> int:
    import torch

    return torch.cuda.memory_allocated() if DEVICE == "cuda" else 0


def max_mem_allocated() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0


def free():
    import torch

    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ (a) the loss


def check_loss(args, have_liger: bool, liger_msg: str) -> list[dict]:
    import torch

    from qed_lightning.losses.sft import chunked_linear_cross_entropy, reference_linear_cross_entropy

    impls = {
        "chunked": lambda h, w, y: chunked_linear_cross_entropy(h, w, y, chunk_size=args.chunk_size),
        "reference": lambda h, w, y: reference_linear_cross_entropy(h, w, y),
    }
    if have_liger:
        from qed_lightning.losses.liger import liger_linear_cross_entropy

        impls = {"liger": lambda h, w, y: liger_linear_cross_entropy(h, w, y), **impls}
    rows = []
    V, H = args.vocab, args.hidden
    for T in args.tokens:
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        hidden = torch.randn(T, H, device=DEVICE, generator=gen).to(torch.bfloat16).requires_grad_(True)
        weight = (torch.randn(V, H, device=DEVICE, generator=gen) * 0.02).to(torch.bfloat16).requires_grad_(True)
        labels = torch.randint(0, V, (T,), device=DEVICE, generator=gen)
        labels[: T // 10] = -100  # a prompt share that is ignored
        # fp32 materialised "gold": what every bf16 implementation is compared against.
        h32 = hidden.detach().float().requires_grad_(True)
        w32 = weight.detach().float().requires_grad_(True)
        gold_loss, _ = reference_linear_cross_entropy(h32, w32, labels)
        gold_loss.backward()
        gold = (gold_loss.detach().double(), h32.grad, w32.grad)
        del h32, w32, gold_loss
        free()
        if not have_liger:
            rows.append({"T": T, "impl": "liger", "status": liger_msg})
        for name, fn in impls.items():
            row = {"T": T, "impl": name}
            try:
                def step():
                    hidden.grad = None
                    weight.grad = None
                    loss, _ = fn(hidden, weight, labels)
                    loss.backward()
                    return loss

                step()  # warmup / JIT
                hidden.grad = weight.grad = None
                free()
                sync()
                reset_peak()
                base = mem_allocated()
                loss = step()
                sync()
                row["peak_mem_gib"] = (max_mem_allocated() - base) / GIB
                gl, gh, gw = gold
                row["loss_rel_err"] = float((loss.detach().double() - gl).abs() / gl.abs())
                row["grad_hidden_max_err"] = float((hidden.grad.float() - gh).abs().max())
                row["grad_weight_max_err"] = float((weight.grad.float() - gw).abs().max())
                row["grad_hidden_max"] = float(gh.abs().max())
                row["grad_weight_max"] = float(gw.abs().max())
                del loss
                row["fwd_bwd_ms"] = median_seconds(step, args.reps, warmup=0, sync=sync) * 1e3
                row["status"] = "ok"
            except Exception as err:
                row["status"] = f"error: {type(err).__name__}: {str(err)[:200]}"
                traceback.print_exc()
            hidden.grad = weight.grad = None
            free()
            rows.append(row)
            print(f"[loss] {row}", flush=True)
        del hidden, weight, labels, gold
        free()
    return rows


# --------------------------------------------------------------- (b) RMSNorm


def check_rmsnorm(args, have_liger: bool, liger_msg: str) -> list[dict]:
    import torch
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    T, H = max(args.tokens), args.hidden
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(T, H, device=DEVICE, generator=gen).to(torch.bfloat16)
    dy = torch.randn(T, H, device=DEVICE, generator=gen).to(torch.bfloat16)
    w = 1 + 0.1 * torch.randn(H, device=DEVICE, generator=gen)
    hf = Qwen3RMSNorm(H, eps=1e-6).to(device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        hf.weight.copy_(w)
    mods = {"hf Qwen3RMSNorm": hf}
    rows = []
    if have_liger:
        from liger_kernel.transformers.rms_norm import LigerRMSNorm

        lg = LigerRMSNorm(H, eps=1e-6).to(device=DEVICE, dtype=torch.bfloat16)
        with torch.no_grad():
            lg.weight.copy_(w)
        mods["liger LigerRMSNorm"] = lg
    results = {}
    for name, mod in mods.items():
        xi = x.clone().requires_grad_(True)

        def step():
            xi.grad = None
            mod.weight.grad = None
            out = mod(xi)
            out.backward(dy.clone())  # a fresh grad: Liger's in-place backward overwrites it
            return out

        try:
            out = step()
            results[name] = (out.detach().float(), xi.grad.float(), mod.weight.grad.float())
            ms = median_seconds(step, max(args.reps, 10), sync=sync) * 1e3
            rows.append({"impl": name, "T": T, "fwd_bwd_ms": ms, "status": "ok"})
        except Exception as err:
            rows.append({"impl": name, "T": T, "status": f"error: {type(err).__name__}: {str(err)[:200]}"})
    if not have_liger:
        rows.append({"impl": "liger LigerRMSNorm", "T": T, "status": liger_msg})
    elif "liger LigerRMSNorm" in results and "hf Qwen3RMSNorm" in results:
        ref, got = results["hf Qwen3RMSNorm"], results["liger LigerRMSNorm"]
        for row in rows:
            if row["impl"] == "liger LigerRMSNorm":
                row["out_max_diff"] = float((ref[0] - got[0]).abs().max())
                row["grad_x_max_diff"] = float((ref[1] - got[1]).abs().max())
                row["grad_w_max_diff"] = float((ref[2] - got[2]).abs().max())
                row["grad_w_max"] = float(ref[2].abs().max())
    for r in rows:
        print(f"[rmsnorm] {r}", flush=True)
    return rows


# ------------------------------------------------ (d) GRPO: policy loss and micro-step


def materialised_logprobs(hidden, weight, targets, temperature: float):
    """The plain way: one [M, V] logits tensor (softmax math in fp32), log_softmax, gather, entropy."""
    logits = (hidden @ weight.t()).float() / temperature  # [M, V]
    logp_all = logits.log_softmax(-1)  # [M, V]
    logp = logp_all.gather(-1, targets[:, None])[:, 0]  # [M]
    return logp, -(logp_all.exp() * logp_all).sum(-1)  # [M], [M]


def grpo_logprob_impls(args) -> dict:
    from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy

    return {
        "chunked": lambda h, w, y: token_logprobs_and_entropy(h, w, y, args.grpo_temperature, args.grpo_chunk_size),
        "materialised": lambda h, w, y: materialised_logprobs(h, w, y, args.grpo_temperature),
    }


def check_grpo_loss(args) -> list[dict]:
    """qed's chunked log-prob pass + qed_nano vs materialised logits + qed_nano, bf16 inputs."""
    import math

    import torch

    from qed_lightning.losses.policy import StepNorms, qed_nano

    impls = grpo_logprob_impls(args)
    V, H, per_seq = args.vocab, args.hidden, args.grpo_seq_tokens
    rows = []
    for T in args.grpo_tokens:
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        hidden = torch.randn(T, H, device=DEVICE, generator=gen).to(torch.bfloat16).requires_grad_(True)  # [T, H]
        weight = (torch.randn(V, H, device=DEVICE, generator=gen) * 0.02).to(torch.bfloat16).requires_grad_(True)
        targets = torch.randint(0, V, (T,), device=DEVICE, generator=gen)  # [T]
        seq = torch.arange(T, device=DEVICE) // per_seq  # [T]
        n = int(seq[-1]) + 1
        adv = torch.randn(n, device=DEVICE, generator=gen)[seq]  # [T]
        old = torch.randn(T, device=DEVICE, generator=gen) * 0.1 - math.log(V)  # [T]: ratio ~ 1
        norms = StepNorms(samples=n, tokens=T, max_tokens=per_seq,
                          seq_lengths=torch.full((n,), per_seq, device=DEVICE))

        def loss_of(fn, h, w):
            logp, entropy = fn(h, w, targets)
            return qed_nano(logp, old, adv, seq, entropy, norms)[0]

        # fp32 materialised "gold" on the same bf16 inputs
        h32 = hidden.detach().float().requires_grad_(True)
        w32 = weight.detach().float().requires_grad_(True)
        gold_loss = loss_of(impls["materialised"], h32, w32)
        gold_loss.backward()
        gold = (gold_loss.detach().double(), h32.grad, w32.grad)
        del h32, w32, gold_loss
        free()
        for name, fn in impls.items():
            row = {"T": T, "impl": name}
            try:
                def step():
                    hidden.grad = None
                    weight.grad = None
                    loss = loss_of(fn, hidden, weight)
                    loss.backward()
                    return loss

                step()  # warmup
                hidden.grad = weight.grad = None
                free()
                sync()
                reset_peak()
                base = mem_allocated()
                loss = step()
                sync()
                row["peak_mem_gib"] = (max_mem_allocated() - base) / GIB
                gl, gh, gw = gold
                row["loss_rel_err"] = float((loss.detach().double() - gl).abs() / gl.abs().clamp_min(1e-30))
                row["grad_hidden_max_err"] = float((hidden.grad.float() - gh).abs().max())
                row["grad_weight_max_err"] = float((weight.grad.float() - gw).abs().max())
                row["grad_hidden_max"] = float(gh.abs().max())
                row["grad_weight_max"] = float(gw.abs().max())
                del loss
                row["fwd_bwd_ms"] = median_seconds(step, args.reps, warmup=0, sync=sync) * 1e3
                row["status"] = "ok"
            except Exception as err:
                row["status"] = f"error: {type(err).__name__}: {str(err)[:200]}"
                traceback.print_exc()
            hidden.grad = weight.grad = None
            free()
            rows.append(row)
            print(f"[grpo loss] {row}", flush=True)
        del hidden, weight, targets, gold
        free()
    peaks = {(r["T"], r["impl"]): r.get("peak_mem_gib") for r in rows}
    for r in rows:
        m = peaks.get((r["T"], "materialised"))
        if r["impl"] == "chunked" and r.get("peak_mem_gib") is not None and m:
            r["peak_over_materialised"] = r["peak_mem_gib"] / m
    return rows


def grpo_microbatch(args, vocab: int):
    """One packed micro-batch of ``step_tokens`` tokens as GRPOModule trains it: synthetic
    completions -> qed's build_rollout_batch -> group-mean advantages -> pack_rollouts.
    Returns (RLMicroBatch, StepNorms, how it was built)."""
    import torch

    from qed_lightning.losses.policy import StepNorms

    per = args.step_tokens // args.grpo_samples
    group = 4
    gen = torch.Generator().manual_seed(2)
    prompt_len = max(2, per // 8)
    samples = []
    for i in range(args.grpo_samples):
        k = per - prompt_len - (i % 3) * (per // 16)  # a little length variety
        samples.append((torch.randint(0, vocab, (prompt_len,), generator=gen).tolist(),
                        torch.randint(0, vocab, (k,), generator=gen).tolist(),
                        (torch.rand(k, generator=gen) * -3).tolist()))
    rewards = torch.rand(len(samples), generator=gen)
    try:
        from qed_lightning.contracts import Completion, Problem, Verdict
        from qed_lightning.losses.advantages import group_mean
        from qed_lightning.rollouts.batch import build_rollout_batch
        from qed_lightning.rollouts.microbatch import pack_rollouts

        n_groups = -(-len(samples) // group)
        problems = [Problem(f"p{g}", "synthetic") for g in range(n_groups)]
        groups = [[Completion(p, c, lp, "length", "", 0) for p, c, lp in samples[g * group:(g + 1) * group]]
                  for g in range(n_groups)]
        verdicts = [Verdict(0) for _ in samples]
        batch = build_rollout_batch(problems, groups, verdicts, rewards, torch.ones(len(samples), dtype=torch.bool), 0)
        adv = group_mean(batch.rewards, batch.group_ids, batch.reward_mask)
        mbs = pack_rollouts(batch, adv, batch.reward_mask, args.step_tokens, pad_id=0)
        seq_lengths = batch.completion_mask.sum(1)
        how = f"qed's build_rollout_batch + pack_rollouts ({len(mbs)} micro-batch)"
        mb = mbs[0]
    except Exception as err:  # the rollouts package needs Lightning; lay the row out the same way by hand
        from types import SimpleNamespace

        ids, pos, at, tgt, old, advs, seqs, off = [], [], [], [], [], [], [], 0
        adv_all = rewards - rewards.view(-1, group).mean(1).repeat_interleave(group)
        for i in sorted(range(len(samples)), key=lambda i: -sum(map(len, samples[i][:2]))):  # as pack_rollouts
            p, c, lp = samples[i]
            ids += p + c
            pos += list(range(len(p) + len(c)))
            at += range(off + len(p) - 1, off + len(p) + len(c) - 1)
            tgt += c
            old += lp
            advs += [float(adv_all[i])] * len(c)
            seqs += [i] * len(c)
            off += len(p) + len(c)
        t = torch.tensor
        mb = SimpleNamespace(input_ids=t([ids]), position_ids=t([pos]), predict_at=t(at), targets=t(tgt),
                             old_logp=t(old), advantages=t(advs), seq=t(seqs),
                             model_kwargs=lambda: {"input_ids": t([ids]), "position_ids": t([pos]), "use_cache": False})
        seq_lengths = t([len(c) for _, c, _ in samples])
        how = f"laid out by this script (qed's rollouts package did not import: {type(err).__name__})"
    norms = StepNorms(samples=len(samples), tokens=int(seq_lengths.sum()), max_tokens=per,
                      seq_lengths=seq_lengths.to(DEVICE))
    return mb, norms, how


def check_grpo_step(args, peak_flops: float | None) -> dict:
    """A GRPOModule-style micro-step on a Qwen3-4B-shaped model: body forward on one packed
    row, hidden at the predicting positions, log-probs (chunked or materialised), qed_nano,
    backward, AdamW step (lr 0: both variants see the same weights)."""
    import torch

    from qed_lightning.losses.policy import qed_nano

    impls = grpo_logprob_impls(args)
    layers, model, note = args.layers, None, None
    while model is None:
        try:
            model = build_model(args, layers)
        except torch.cuda.OutOfMemoryError:
            free()
            if layers <= 4:
                raise
            note = f"{args.layers} layers did not fit; ran {layers // 2}"
            layers //= 2
    n_params = sum(p.numel() for p in model.parameters())
    mb, norms, how = grpo_microbatch(args, args.vocab)
    kwargs = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in mb.model_kwargs().items()}
    predict_at, targets = mb.predict_at.to(DEVICE), mb.targets.to(DEVICE)
    old, adv, seq = mb.old_logp.to(DEVICE), mb.advantages.to(DEVICE), mb.seq.to(DEVICE)
    weight = model.get_output_embeddings().weight
    rows = []
    for name, fn in impls.items():
        row = {"impl": name, "layers": layers, "params": n_params, "tokens": int(kwargs["input_ids"].numel()),
               "completion_tokens": int(targets.numel())}
        try:
            opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0, fused=DEVICE == "cuda")
            free()
            reset_peak()
            losses, times = [], []
            for _ in range(1 + args.model_steps):
                sync()
                t0 = time.perf_counter()
                hidden = model.base_model(**kwargs).last_hidden_state  # [1, L, H]
                hidden = hidden.reshape(-1, hidden.shape[-1])[predict_at]  # [M, H]
                logp, entropy = fn(hidden, weight, targets)
                loss, _ = qed_nano(logp, old, adv, seq, entropy, norms)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync()
                times.append(time.perf_counter() - t0)
                losses.append(float(loss.detach()))
                del hidden, logp, entropy, loss
            row["peak_mem_gib"] = max_mem_allocated() / GIB
            del opt
            free()
            row.update(losses=losses, times_s=times, step_s=sum(times[1:]) / len(times[1:]))
            row["tokens_per_s"] = row["tokens"] / row["step_s"]
            if peak_flops:  # 6 x params x tokens, as part c (recompute and attention not counted)
                row["mfu"] = 6 * n_params * row["tokens"] / row["step_s"] / peak_flops
            row["status"] = "ok"
        except Exception as err:
            row["status"] = f"error: {type(err).__name__}: {str(err)[:200]}"
            traceback.print_exc()
            model.zero_grad(set_to_none=True)
            free()
        rows.append(row)
        print(f"[grpo step] {row}", flush=True)
    del model
    free()
    return {"rows": rows, "layers": layers, "note": note, "params": n_params, "packing": how}


def check_grpo(args, peak_flops: float | None) -> dict:
    out = {"loss": [], "step": "skipped"}
    try:
        out["loss"] = check_grpo_loss(args)
    except Exception as err:
        traceback.print_exc()
        out["loss"] = [{"impl": "-", "T": "-", "status": f"error: {type(err).__name__}: {str(err)[:300]}"}]
    free()
    if not args.grpo_skip_step:
        try:
            out["step"] = check_grpo_step(args, peak_flops)
        except Exception as err:
            traceback.print_exc()
            out["step"] = f"error: {type(err).__name__}: {str(err)[:300]}"
    return out


# --------------------------------------------------------- (c) model + SFT step


def build_model(args, layers: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim, max_position_embeddings=40960,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_cache=False,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(DEVICE):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.to(torch.bfloat16)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def packed_batch(args):
    """One packed row of ``args.step_tokens`` tokens: five samples, prompts masked."""
    import torch

    from qed_lightning.data.packing import collate_packed, pack_examples
    from qed_lightning.data.rendering import TokenizedExample

    total = args.step_tokens
    shares = [0.19, 0.27, 0.11, 0.22]
    lengths = [int(total * s) for s in shares]
    lengths.append(total - sum(lengths))
    gen = torch.Generator().manual_seed(1)
    examples = []
    for i, n in enumerate(lengths):
        ids = torch.randint(0, args.vocab, (n,), generator=gen).tolist()
        prompt = n // 5
        examples.append(TokenizedExample(id=f"s{i}", input_ids=ids, labels=[-100] * prompt + ids[prompt:]))
    bins = pack_examples(examples, total)
    batch = collate_packed(bins, pad_id=0)
    return batch.__class__(
        input_ids=batch.input_ids.to(DEVICE), labels=batch.labels.to(DEVICE),
        position_ids=batch.position_ids.to(DEVICE), attention_mask=None,
    )


def run_variant(model, lm_cls, loss: str, batch, args) -> dict:
    import torch

    lm = lm_cls(model, loss, args.chunk_size)
    # lr 0: every variant sees the same weights (so their losses are comparable); the
    # optimizer still does all of its arithmetic.
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0, fused=DEVICE == "cuda")
    free()
    reset_peak()
    losses, times = [], []
    for k in range(1 + args.model_steps):
        sync()
        t0 = time.perf_counter()
        loss_sum, count = lm(batch)
        (loss_sum / count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss_sum.detach()) / float(count))
    peak = max_mem_allocated() / GIB
    del opt, lm
    free()
    step_s = sum(times[1:]) / len(times[1:])
    return {"losses": losses, "step_s": step_s, "times_s": times, "peak_mem_gib": peak,
            "tokens_per_s": args.step_tokens / step_s}


def check_model(args, have_liger: bool, liger_msg: str, peak_flops: float | None) -> dict:
    import torch

    lm_cls = load_lm_loss()
    layers = args.layers
    model = None
    note = None
    while model is None:
        try:
            model = build_model(args, layers)
        except torch.cuda.OutOfMemoryError:
            free()
            if layers <= 4:
                raise
            note = f"{args.layers} layers did not fit; ran {layers // 2}"
            layers //= 2
    n_params = sum(p.numel() for p in model.parameters())
    batch = packed_batch(args)
    rows = []
    variants = [("no liger", "chunked"), ("liger kernels", "liger"), ("liger kernels", "chunked")]
    for patch, loss in variants:
        row = {"kernels": patch, "loss": loss, "layers": layers, "params": n_params}
        if patch == "liger kernels":
            if not have_liger:
                row["status"] = liger_msg
                rows.append(row)
                continue
            if not getattr(model, "_bench_liger", False):
                try:
                    try:
                        from qed_lightning.losses.liger import apply_liger_kernels
                    except ImportError:
                        apply_liger_kernels = None
                    if apply_liger_kernels is not None:
                        applied = apply_liger_kernels(model)
                    else:
                        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

                        _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True,
                                                        cross_entropy=False, fused_linear_cross_entropy=False)
                        applied = True
                    model._bench_liger = True
                    row["liger_applied"] = bool(applied)
                except Exception as err:
                    row["status"] = f"error patching: {type(err).__name__}: {str(err)[:200]}"
                    rows.append(row)
                    continue
        try:
            row.update(run_variant(model, lm_cls, loss, batch, args))
            # 6 * params * tokens: the usual MFU count; gradient checkpointing's extra
            # forward and the attention FLOPs are not counted.
            if peak_flops:
                row["mfu"] = 6 * n_params * args.step_tokens / row["step_s"] / peak_flops
            row["status"] = "ok"
        except Exception as err:
            row["status"] = f"error: {type(err).__name__}: {str(err)[:200]}"
            traceback.print_exc()
            model.zero_grad(set_to_none=True)
            free()
        rows.append(row)
        print(f"[model] {row}", flush=True)
    del model
    free()
    return {"rows": rows, "layers": layers, "note": note, "params": n_params}


# ------------------------------------------------------------------- report


def render(res: dict) -> str:
    m = res["machine"]
    out = [
        "# GPU check: Liger kernels vs qed's torch paths",
        "",
        f"Card: {m['gpu']} ({m['gpu_mem_gib']:.0f} GiB), torch {m['torch']} (CUDA {m['cuda']}), "
        f"transformers {m['transformers']}, liger-kernel {m['liger']}, Python {m['python']}; {m['date']}.",
        "",
        f"## a. LM head + cross-entropy, V={res['config']['vocab']}, H={res['config']['hidden']}, bf16",
        "",
        "Peak memory is `max_memory_allocated` over the inputs during one fwd+bwd; errors are against an "
        "fp32 materialised computation on the same bf16 inputs (10% of labels ignored).",
        "",
        "| T | impl | fwd+bwd (ms) | peak mem (GiB) | loss rel err | grad h max err | grad W max err | status |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in res["loss"]:
        out.append(
            f"| {r['T']} | {r['impl']} | {fmt(r.get('fwd_bwd_ms'), '.1f')} | {fmt(r.get('peak_mem_gib'), '.2f')} | "
            f"{fmt(r.get('loss_rel_err'), '.1e')} | {fmt(r.get('grad_hidden_max_err'), '.1e')} | "
            f"{fmt(r.get('grad_weight_max_err'), '.1e')} | {r['status']} |")
    out += [
        "",
        "## b. RMSNorm fwd+bwd, bf16",
        "",
        "| impl | T x H | fwd+bwd (ms) | out max diff | grad x max diff | grad w max diff | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in res["rmsnorm"]:
        out.append(
            f"| {r['impl']} | {r['T']} x {res['config']['hidden']} | {fmt(r.get('fwd_bwd_ms'), '.3f')} | "
            f"{fmt(r.get('out_max_diff'), '.1e')} | {fmt(r.get('grad_x_max_diff'), '.1e')} | "
            f"{fmt(r.get('grad_w_max_diff'), '.1e')} | {r['status']} |")
    mc = res.get("model")
    out += ["", "## c. Qwen3-4B-shaped model, one packed SFT step", ""]
    if isinstance(mc, dict) and "rows" in mc:
        out.append(
            f"Hidden {res['config']['hidden']}, {mc['layers']} layers, {res['config']['heads']}/"
            f"{res['config']['kv_heads']} heads, head_dim {res['config']['head_dim']}, intermediate "
            f"{res['config']['intermediate']}, "
            f"vocab {res['config']['vocab']}, tied embeddings ({mc['params'] / 1e9:.2f} B params), random init, bf16 "
            f"weights and AdamW(fused) state, sdpa attention, gradient checkpointing, one packed row of "
            f"{res['config']['step_tokens']} tokens (5 samples), 1 warmup + {res['config']['model_steps']} "
            f"measured steps. MFU = 6 x params x tokens / step time / {m['peak_bf16_tflops']} TFLOP/s.")
        if mc.get("note"):
            out.append(f"Note: {mc['note']}.")
        out += [
            "",
            "| kernels | loss | tokens/s | MFU | step (s) | peak mem (GiB) | step losses | status |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for r in mc["rows"]:
            losses = ", ".join(f"{x:.4f}" for x in r.get("losses", []))
            out.append(
                f"| {r['kernels']} | {r['loss']} | {fmt(r.get('tokens_per_s'), '.0f')} | "
                f"{fmt(r.get('mfu'), '.1%')} | {fmt(r.get('step_s'), '.2f')} | {fmt(r.get('peak_mem_gib'), '.1f')} | "
                f"{losses} | {r['status']} |")
    else:
        out.append(f"not run: {mc}")
    g = res.get("grpo")
    if isinstance(g, dict):
        c = res["config"]
        out += ["", f"## d. GRPO: policy loss and a GRPOModule-style micro-step, V={c['vocab']}, bf16", "",
                f"Loss: LM head [V, H={c['hidden']}] and hidden [T, H] in bf16 as leaves, temperature "
                f"{c['grpo_temperature']}, the `qed_nano` loss ({c['grpo_seq_tokens']} tokens per sample, random "
                f"advantages); `chunked` = qed's `token_logprobs_and_entropy` (chunk {c['grpo_chunk_size']} rows, "
                "activation-checkpointed), `materialised` = one [T, V] logits tensor + log_softmax + entropy. Peak is "
                "`max_memory_allocated` over the inputs; errors against an fp32 materialised computation.", "",
                "| T | impl | fwd+bwd (ms) | peak mem (GiB) | chunked / materialised peak | loss rel err | "
                "grad h max err | grad W max err | status |",
                "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in g.get("loss", []):
            out.append(
                f"| {r['T']} | {r['impl']} | {fmt(r.get('fwd_bwd_ms'), '.1f')} | {fmt(r.get('peak_mem_gib'), '.2f')} | "
                f"{fmt(r.get('peak_over_materialised'), '.3f')} | {fmt(r.get('loss_rel_err'), '.1e')} | "
                f"{fmt(r.get('grad_hidden_max_err'), '.1e')} | {fmt(r.get('grad_weight_max_err'), '.1e')} | "
                f"{r['status']} |")
        st = g.get("step")
        out.append("")
        if isinstance(st, dict):
            out += [
                f"Micro-step: the part c model shape ({st['layers']} layers, {st['params'] / 1e9:.2f} B params, random "
                f"init, bf16, gradient checkpointing, fused AdamW with lr 0), one packed row of "
                f"{c['step_tokens']} tokens holding {c['grpo_samples']} samples ({st['packing']}): body forward, "
                "hidden at the predicting positions, log-probs, `qed_nano`, backward, optimizer step; 1 warmup + "
                f"{c['model_steps']} measured. Peak memory includes weights, gradients and AdamW state.",
                ""]
            if st.get("note"):
                out += [f"Note: {st['note']}.", ""]
            out += ["| log-probs | completion tokens | tokens/s | MFU | step (s) | peak mem (GiB) | step losses | status |",
                    "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
            for r in st["rows"]:
                losses = ", ".join(f"{x:.4f}" for x in r.get("losses", []))
                out.append(
                    f"| {r['impl']} | {r.get('completion_tokens', '-')} | {fmt(r.get('tokens_per_s'), '.0f')} | "
                    f"{fmt(r.get('mfu'), '.1%')} | {fmt(r.get('step_s'), '.2f')} | {fmt(r.get('peak_mem_gib'), '.1f')} | "
                    f"{losses} | {r['status']} |")
        else:
            out.append(f"Micro-step: {st}")
    out += ["", f"Total time: {res['total_s']:.0f} s."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--liger-wheel", default=None, help="liger-kernel wheel to pip install --no-deps if missing")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=2560)
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192], help="part a token counts")
    ap.add_argument("--chunk-size", type=int, default=1024, help="chunked loss rows per chunk")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    ap.add_argument("--layers", type=int, default=36, help="part c layers (Qwen3-4B: 36)")
    ap.add_argument("--heads", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--kv-heads", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--head-dim", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--intermediate", type=int, default=9728, help=argparse.SUPPRESS)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help=argparse.SUPPRESS)  # toy sizes on CPU, to check the code paths without a GPU
    ap.add_argument("--step-tokens", type=int, default=8192, help="part c packed tokens per step")
    ap.add_argument("--model-steps", type=int, default=2, help="part c measured steps (after 1 warmup)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the card's bf16 peak for MFU")
    ap.add_argument("--grpo-tokens", type=int, nargs="+", default=[8192], help="part d policy-loss token counts")
    ap.add_argument("--grpo-chunk-size", type=int, default=256, help="part d log-prob chunk (GRPOModule's default)")
    ap.add_argument("--grpo-seq-tokens", type=int, default=1024, help="part d loss: completion tokens per sample")
    ap.add_argument("--grpo-samples", type=int, default=8, help="part d micro-step: samples in the packed row")
    ap.add_argument("--grpo-temperature", type=float, default=0.8)
    ap.add_argument("--grpo-skip-step", action="store_true", help="part d: the loss only, no model micro-step")
    ap.add_argument("--skip", nargs="*", default=[], choices=["loss", "rmsnorm", "grpo", "model"])
    args = ap.parse_args(argv)

    import torch

    global DEVICE
    if args.cpu_smoke:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0

    t_start = time.perf_counter()
    install_msg = install_liger(args.liger_wheel)
    have_liger, liger_msg = liger_ok()
    if args.cpu_smoke:
        have_liger, liger_msg = False, "liger not run (CPU smoke run)"
    print(f"liger: {install_msg}; {'ok ' + liger_msg if have_liger else liger_msg}", flush=True)
    import transformers

    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke run)"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_BF16 if k in name), None)
    res = {
        "machine": {
            "gpu": name,
            "gpu_mem_gib": torch.cuda.get_device_properties(0).total_memory / GIB if DEVICE == "cuda" else 0.0,
            "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "liger": liger_msg if have_liger else f"none ({liger_msg}; {install_msg})",
            "python": platform.python_version(), "peak_bf16_tflops": peak / 1e12 if peak else None,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("liger_wheel", "out")},
    }
    parts = [("loss", lambda: check_loss(args, have_liger, liger_msg)),
             ("rmsnorm", lambda: check_rmsnorm(args, have_liger, liger_msg)),
             ("grpo", lambda: check_grpo(args, peak)),  # before part c: no Liger patch in it
             # Last: Liger's patch replaces Qwen3 functions module-wide.
             ("model", lambda: check_model(args, have_liger, liger_msg, peak))]
    for key, fn in parts:
        if key in args.skip:
            res[key] = "skipped" if key in ("model", "grpo") else []
            continue
        try:
            res[key] = fn()
        except Exception as err:
            traceback.print_exc()
            res[key] = f"error: {type(err).__name__}: {str(err)[:300]}" if key in ("model", "grpo") else [
                {"impl": "-", "T": "-", "status": f"error: {type(err).__name__}: {str(err)[:300]}"}]
        free()
    res["total_s"] = time.perf_counter() - t_start
    md = render(res)
    paths = write_results(args.out, "gpu_check", md, res)
    print(md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
