"""SFT benchmarks on CPU: the LM-head loss's memory, and SFT step throughput.

Part a (loss memory): forward+backward of the LM head + cross-entropy alone, the
chunked fused loss (``chunked_linear_cross_entropy``) against the materialised one
(``reference_linear_cross_entropy``), each in its own subprocess so the peak RSS of
one cannot hide in the other's. Peak RSS increase is measured over the RSS right
before the loss call (inputs already allocated), and the losses/gradients of the two
runs are compared.

Part b (SFT step throughput): the same demo data, model, seed and sample order,
N optimizer steps after warmup, of

* ``qed``: packed micro-batches (``StepCollator(packing=True)``) +
  ``CausalLMWithLoss("chunked")`` + ``accumulate_step_gradients`` + AdamW;
* ``plain``: padded micro-batches (``StepCollator(packing=False)``) +
  ``model(input_ids, attention_mask).logits`` + ``F.cross_entropy`` over the shifted
  labels, normalised by the step's target-token count, + AdamW;
* ``trl`` (optional, ``--trl-python``): TRL's ``SFTTrainer`` run by another
  interpreter (a separate venv, so TRL never touches this project's pins), as a
  reference row.

Each variant runs in its own subprocess. Results go to ``<out>/sft.md`` and
``<out>/sft.json``. Run: ``.venv/bin/python bench/sft.py`` (see bench/README.md).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from harness import (MB, REPO, StepChild, command_line, interleaved, loadavg, machine_info, mem_available_gb,
                     mem_total_gb, peak_rss_bytes, proc_status_kb, run_child, say, wait_go, write_results)

SRC = REPO / "src"


# --------------------------------------------------------------------------- utils


def sft_machine_info() -> dict:
    import torch
    import transformers

    return machine_info(loadavg_at_start=loadavg(), mem_total_gb=round(mem_total_gb(), 1), torch=torch.__version__,
                        transformers=transformers.__version__, torch_threads=torch.get_num_threads())


def _fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 10 ** -nd or abs(x) >= 1e6):
            return f"{x:.2e}"
        return f"{x:.{nd}f}"
    return str(x)


# ------------------------------------------------------------------ part a: loss


def child_loss(spec: dict) -> dict:
    """Forward+backward of one LM-head loss on random data; peak RSS over baseline."""
    import torch

    sys.path.insert(0, str(SRC))
    from qed_lightning.losses.sft import chunked_linear_cross_entropy, reference_linear_cross_entropy

    n, v, h = spec["tokens"], spec["vocab"], spec["hidden"]
    gen = torch.Generator().manual_seed(spec["seed"])
    # Filled in place: no randn temporaries that would raise the RSS high-water mark.
    hidden = torch.empty(n, h).normal_(0.0, 1.0, generator=gen).requires_grad_(True)  # [N, H]
    weight = torch.empty(v, h).normal_(0.0, 0.02, generator=gen).requires_grad_(True)  # [V, H]
    labels = torch.randint(0, v, (n,), generator=gen)  # [N]: every token is a target
    if spec["impl"] == "chunked":
        def fn():
            return chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=spec["chunk_size"])
    else:
        def fn():
            return reference_linear_cross_entropy(hidden, weight, labels)

    gc.collect()
    base = proc_status_kb("VmRSS") * 1024
    peak_before = peak_rss_bytes()
    t0 = time.perf_counter()
    loss, count = fn()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    peak = peak_rss_bytes()

    out_dir = Path(spec["save_dir"])
    torch.save({"loss": loss.detach().double(), "count": int(count)}, out_dir / f"{spec['impl']}_loss.pt")
    torch.save(hidden.grad, out_dir / f"{spec['impl']}_grad_hidden.pt")
    torch.save(weight.grad, out_dir / f"{spec['impl']}_grad_weight.pt")
    return {
        "impl": spec["impl"],
        "loss": float(loss),
        "count": int(count),
        "baseline_rss_mb": base / MB,
        "peak_rss_before_mb": peak_before / MB,
        "peak_rss_mb": peak / MB,
        "peak_increase_mb": (peak - base) / MB,
        "fwd_s": t1 - t0,
        "bwd_s": t2 - t1,
        "fwd_bwd_s": t2 - t0,
    }


def _compare_saved(save_dir: Path) -> dict:
    import torch

    def load(name):
        return torch.load(save_dir / name, mmap=True, weights_only=True)

    out = {}
    a, b = load("chunked_loss.pt"), load("reference_loss.pt")
    out["loss_abs_diff"] = float((a["loss"] - b["loss"]).abs())
    out["loss_rel_diff"] = out["loss_abs_diff"] / max(abs(float(b["loss"])), 1e-30)
    out["count_equal"] = a["count"] == b["count"]
    for key in ("grad_hidden", "grad_weight"):
        ga, gb = load(f"chunked_{key}.pt"), load(f"reference_{key}.pt")
        diff = 0.0
        scale = 0.0
        for s in range(0, ga.shape[0], 8192):  # row blocks: the mmap'd files never fully in RAM twice
            diff = max(diff, float((ga[s:s + 8192] - gb[s:s + 8192]).abs().max()))
            scale = max(scale, float(gb[s:s + 8192].abs().max()))
        out[f"{key}_max_abs_diff"] = diff
        out[f"{key}_max_abs"] = scale
    return out


def run_loss_part(args) -> dict:
    save_dir = Path(tempfile.mkdtemp(prefix="qed-bench-loss-"))
    try:
        results = {}
        for impl in ("chunked", "reference"):
            spec = {
                "impl": impl, "tokens": args.loss_tokens, "vocab": args.loss_vocab, "hidden": args.loss_hidden,
                "chunk_size": args.loss_chunk_size, "seed": args.seed, "save_dir": str(save_dir),
            }
            print(f"[loss] {impl}: N={args.loss_tokens} V={args.loss_vocab} H={args.loss_hidden} ...", flush=True)
            results[impl] = run_child(__file__, "loss", spec)
            print(f"[loss] {impl}: {json.dumps(results[impl])[:400]}", flush=True)
        part = {
            "config": {"tokens": args.loss_tokens, "vocab": args.loss_vocab, "hidden": args.loss_hidden,
                       "chunk_size": args.loss_chunk_size, "dtype": "float32",
                       "weight_grad_mb": args.loss_vocab * args.loss_hidden * 4 / MB,
                       "logits_mb": args.loss_tokens * args.loss_vocab * 4 / MB},
            "chunked": results["chunked"],
            "reference": results["reference"],
        }
        if all("error" not in r for r in results.values()):
            part["agreement"] = _compare_saved(save_dir)
            c, r = results["chunked"], results["reference"]
            part["ratio_peak_increase"] = c["peak_increase_mb"] / r["peak_increase_mb"]
            part["ratio_time"] = c["fwd_bwd_s"] / r["fwd_bwd_s"]
        return part
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)


# --------------------------------------------------------- part b: SFT throughput


def _demo_examples(tokenizer, max_length: int):
    from qed_lightning.data.records import SFTColumns, rows_to_sft_examples
    from qed_lightning.data.rendering import render_sft_example
    from qed_lightning.data.sources import iter_rows

    columns = SFTColumns(problem="problem", response="proof", reasoning="reasoning", id="id")
    examples, _ = rows_to_sft_examples(iter_rows("demo"), columns)
    rendered = [render_sft_example(tokenizer, e) for e in examples]
    kept = [r for r in rendered if len(r.input_ids) <= max_length]
    if not kept:  # an empty sample pool would make the step schedule loop forever
        shortest = min(len(r.input_ids) for r in rendered)
        raise SystemExit(f"--max-length {max_length}: no demo example fits (the shortest renders to {shortest} tokens)")
    return examples, kept, len(rendered) - len(kept)


def _sample_order(n: int, total: int, seed: int) -> list[int]:
    """``total`` indices: seeded permutations of range(n), one per epoch, concatenated."""
    import torch

    order: list[int] = []
    epoch = 0
    while len(order) < total:
        gen = torch.Generator().manual_seed(seed + epoch)
        order += torch.randperm(n, generator=gen).tolist()
        epoch += 1
    return order[:total]


def child_sft(spec: dict) -> dict:
    """Warmup + measured optimizer steps of one variant ("qed" or "plain")."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(SRC))
    from qed_lightning.data.steps import StepCollator
    from qed_lightning.models import load_policy, load_tokenizer
    from qed_lightning.modules.lm_loss import CausalLMWithLoss
    from qed_lightning.modules.sft import accumulate_step_gradients

    torch.manual_seed(spec["seed"])
    variant = spec["variant"]
    tokenizer = load_tokenizer(spec["model"])
    policy = load_policy(spec["model"], dtype="float32")
    policy.config.use_cache = False
    policy.train()
    _, examples, dropped = _demo_examples(tokenizer, spec["max_length"])

    n_steps = spec["warmup_steps"] + spec["steps"]
    per_step = spec["samples_per_step"]
    order = _sample_order(len(examples), n_steps * per_step, spec["seed"])
    collator = StepCollator(
        tokenizer.pad_token_id, packing=(variant == "qed"),
        micro_batch_tokens=spec["micro_batch_tokens"], micro_batch_size=spec["micro_batch_size"],
    )
    batches = [collator([examples[i] for i in order[k * per_step:(k + 1) * per_step]]) for k in range(n_steps)]

    opt = torch.optim.AdamW(policy.parameters(), lr=spec["lr"], weight_decay=0.0)
    lm = CausalLMWithLoss(policy, "chunked", spec["loss_chunk_size"]) if variant == "qed" else None

    def shifted_targets(mb) -> int:
        return int((mb.labels[:, 1:] != -100).sum())

    def qed_step(batch) -> tuple[float, int]:
        targets = batch.num_target_tokens
        loss_sum = accumulate_step_gradients(lm, batch, global_targets=targets, world_size=1)
        return float(loss_sum) / targets, targets

    def plain_step(batch) -> tuple[float, int]:
        targets = sum(shifted_targets(mb) for mb in batch.micro_batches)
        total = 0.0
        for mb in batch.micro_batches:
            logits = policy(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits  # [B, T, V]
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                mb.labels[:, 1:].reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            (loss / targets).backward()
            total += float(loss.detach())
            del logits, loss
        return total / targets, targets

    step_fn = qed_step if variant == "qed" else plain_step
    gc.collect()
    rss_before = proc_status_kb("VmRSS") * 1024
    peak_before = peak_rss_bytes()
    steps = []
    # Lockstep protocol with the parent: it sends "step" when this process may run its
    # next step, so two variants alive at once never compute at the same time.
    say("ready", {"variant": variant})
    for k, batch in enumerate(batches):
        wait_go()
        t0 = time.perf_counter()
        loss, targets = step_fn(batch)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        steps.append({
            "warmup": k < spec["warmup_steps"],
            "loss": loss,
            "time_s": dt,
            "tokens": batch.num_tokens,
            "target_tokens": targets,
            "processed_tokens": sum(int(mb.input_ids.numel()) for mb in batch.micro_batches),
            "micro_batches": [list(mb.input_ids.shape) for mb in batch.micro_batches],
            "loadavg": os.getloadavg()[0],
        })
        print(f"[{variant}] step {k} loss {loss:.6f} {dt:.1f}s", file=sys.stderr, flush=True)
        say("done", steps[-1])
    peak = peak_rss_bytes()
    measured = [s for s in steps if not s["warmup"]]
    time_s = sum(s["time_s"] for s in measured)
    tokens = sum(s["tokens"] for s in measured)
    return {
        "variant": variant,
        "examples": len(examples),
        "dropped_overlong": dropped,
        "steps": steps,
        "tokens_per_s": tokens / time_s,
        "measured_tokens": tokens,
        "measured_time_s": time_s,
        "padding_share": 1 - tokens / sum(s["processed_tokens"] for s in measured),
        "rss_before_train_mb": rss_before / MB,
        "peak_rss_before_train_mb": peak_before / MB,
        "peak_rss_mb": peak / MB,
        "train_peak_increase_mb": (peak - rss_before) / MB,
        "params": sum(p.numel() for p in policy.parameters()),
    }


def run_lockstep(specs: list[dict], n_steps: int, interleave: bool) -> dict:
    """Runs the variants' steps alternately (ABBA order), or one variant after another."""
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="qed-bench-sft-") as tmp:
        groups = [specs] if interleave else [[s] for s in specs]
        for group in groups:
            children = [StepChild(__file__, "sft", spec["variant"], spec, Path(tmp)) for spec in group]
            try:
                for c in children:
                    c.expect("ready")
                for k, c in interleaved(children, n_steps):
                    msg = c.step()
                    print(f"[sft] {c.name} step {k}: loss {msg['loss']:.6f}, {msg['time_s']:.1f} s, "
                          f"load {msg['loadavg']:.2f}", flush=True)
                for c in children:
                    results[c.name] = c.finish()
            except Exception as err:  # a child died: keep its stderr for the report
                for c in children:
                    if c.name not in results:
                        results[c.name] = c.fail(f"{type(err).__name__}: {err}")
    return results


TRL_SCRIPT = textwrap.dedent('''
    """Generated by bench/sft.py: TRL SFTTrainer on the qed demo data (reference row)."""
    import json, resource, sys, tempfile, time

    spec = json.load(open(sys.argv[1]))
    import torch, transformers, trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    def current_rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    torch.manual_seed(spec["seed"])
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    dataset = Dataset.from_list(spec["rows"])

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts, self.ends = [], []
        def on_step_begin(self, args, state, control, **kwargs):
            self.starts.append(time.perf_counter())
        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    class CountingSFTTrainer(SFTTrainer):
        bench_tokens, bench_processed, bench_targets, bench_losses = [], [], [], []
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.bench_tokens.append(int(inputs["attention_mask"].sum()))
                self.bench_processed.append(int(inputs["input_ids"].numel()))
                self.bench_targets.append(int((inputs["labels"][:, 1:] != -100).sum()))
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if model.training:
                self.bench_losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    n_steps = spec["warmup_steps"] + spec["steps"]
    with tempfile.TemporaryDirectory() as out_dir:
        config = SFTConfig(
            output_dir=out_dir, per_device_train_batch_size=spec["samples_per_step"],
            gradient_accumulation_steps=1, max_steps=n_steps, learning_rate=spec["lr"],
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
            optim="adamw_torch", bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
            max_length=spec["max_length"], packing=False, padding_free=False,
            train_sampling_strategy="sequential", shuffle_dataset=False, dataloader_num_workers=0,
            logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=spec["seed"],
        )
        timer = StepTimer()
        trainer = CountingSFTTrainer(model=model, args=config, train_dataset=dataset,
                                     processing_class=tok, callbacks=[timer])
        rss_before = current_rss()
        trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    w = spec["warmup_steps"]
    times = [e - s for s, e in zip(timer.starts, timer.ends)]
    tokens = sum(CountingSFTTrainer.bench_tokens[w:])
    result = {
        "variant": "trl",
        "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
        "losses": CountingSFTTrainer.bench_losses, "times_s": times,
        "tokens": CountingSFTTrainer.bench_tokens, "target_tokens": CountingSFTTrainer.bench_targets,
        "processed_tokens": CountingSFTTrainer.bench_processed,
        "measured_tokens": tokens, "measured_time_s": sum(times[w:]),
        "tokens_per_s": tokens / sum(times[w:]),
        "padding_share": 1 - tokens / sum(CountingSFTTrainer.bench_processed[w:]),
        "rss_before_train_mb": rss_before / 2**20, "peak_rss_mb": peak / 2**20,
        "train_peak_increase_mb": (peak - rss_before) / 2**20,
    }
    json.dump(result, open(sys.argv[2], "w"))
''')


def run_trl(args, sft_spec: dict) -> dict:
    if not args.trl_python:
        return {"error": "not run: no --trl-python given (TRL must live in its own venv; see bench/README.md)"}
    if not Path(args.trl_python).exists():
        return {"error": f"not run: --trl-python {args.trl_python} does not exist"}
    probe = subprocess.run([args.trl_python, "-c", "import trl, transformers, torch, datasets; "
                            "print(trl.__version__, transformers.__version__, torch.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        return {"error": f"not run: trl does not import in {args.trl_python}: {lines[-1] if lines else '?'}"}
    # Same rows, same order, as the qed/plain variants; the reasoning goes into the
    # assistant content as <think>..</think>, exactly as qed renders it for a template
    # that drops reasoning_content (SmolLM2's ChatML). Prompt/completion format, so
    # TRL trains the completion only, like qed.
    sys.path.insert(0, str(SRC))
    from qed_lightning.data.rendering import template_keeps_reasoning
    from qed_lightning.models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(args.model)
    examples, kept, _ = _demo_examples(tokenizer, args.max_length)
    kept_ids = {k.id for k in kept}
    examples = [e for e in examples if e.id in kept_ids]
    keeps = template_keeps_reasoning(tokenizer)
    rows = []
    for e in examples:
        msg = {"role": "assistant", "content": e.response}
        if e.reasoning is not None:
            if keeps:
                msg["reasoning_content"] = e.reasoning
            else:
                msg["content"] = f"<think>\n{e.reasoning.strip(chr(10))}\n</think>\n\n{e.response}"
        rows.append({"prompt": [dict(m) for m in e.prompt_messages], "completion": [msg]})
    n_steps = args.warmup_steps + args.steps
    order = _sample_order(len(rows), n_steps * args.samples_per_step, args.seed)
    spec = dict(sft_spec, model_path=resolve_model_path(args.model), rows=[rows[i] for i in order])
    with tempfile.TemporaryDirectory(prefix="qed-bench-trl-") as tmp:
        script = Path(tmp) / "trl_sft.py"
        script.write_text(TRL_SCRIPT)
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([args.trl_python, str(script), str(spec_path), str(result_path)],
                                  capture_output=True, text=True, timeout=args.trl_timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"not run: TRL run timed out after {args.trl_timeout} s"}
        if proc.returncode != 0 or not result_path.exists():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return {"error": f"not run: TRL run failed (exit {proc.returncode}): {lines[-1] if lines else '?'}",
                    "stderr_tail": proc.stderr[-3000:]}
        result = json.loads(result_path.read_text())
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        return result


def run_sft_part(args) -> dict:
    spec = {
        "model": args.model, "seed": args.seed, "max_length": args.max_length, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "samples_per_step": args.samples_per_step,
        "micro_batch_tokens": args.micro_batch_tokens, "micro_batch_size": args.micro_batch_size,
        "lr": args.lr, "loss_chunk_size": args.loss_chunk_size,
    }
    part: dict = {"config": spec}
    variants = [v for v in ("qed", "plain") if v not in args.skip_variant]
    for v in args.skip_variant:
        part[v] = {"error": "not run: skipped with --skip-variant"}
    # Both children alive at once (~7 GB RSS each with the demo model) so their steps
    # can alternate and see the same background load; one after the other if memory
    # is short or --sequential is given.
    avail = mem_available_gb(default=0.0)
    interleave = not args.sequential and avail >= 18.0
    part["schedule"] = ("interleaved (ABBA steps, each variant its own process)" if interleave else
                        "sequential (one process after the other"
                        + (f"; only {avail:.1f} GB available)" if not args.sequential else ")"))
    print(f"[sft] {', '.join(variants)}: {part['schedule']} ...", flush=True)
    if variants:
        part.update(run_lockstep([dict(spec, variant=v) for v in variants],
                                 args.warmup_steps + args.steps, interleave))
    for v in variants:
        print(f"[sft] {v}: {json.dumps({k: x for k, x in part[v].items() if k != 'steps'})[:500]}", flush=True)
    print("[sft] trl ...", flush=True)
    part["trl"] = run_trl(args, spec)
    print(f"[sft] trl: {json.dumps(part['trl'])[:500]}", flush=True)
    q, p = part["qed"], part["plain"]
    if "error" not in q and "error" not in p:
        ql = [s["loss"] for s in q["steps"]]
        pl = [s["loss"] for s in p["steps"]]
        part["loss_rel_diff_per_step"] = [abs(a - b) / abs(b) for a, b in zip(ql, pl)]
        part["target_tokens_equal"] = [s["target_tokens"] for s in q["steps"]] == [
            s["target_tokens"] for s in p["steps"]]
        part["ratio_tokens_per_s"] = q["tokens_per_s"] / p["tokens_per_s"]
        paired = sorted(
            (a["tokens"] / a["time_s"]) / (b["tokens"] / b["time_s"])
            for a, b in zip(q["steps"], p["steps"]) if not a["warmup"])
        part["ratio_tokens_per_s_per_step"] = paired
        part["ratio_tokens_per_s_median_step"] = paired[len(paired) // 2]
        part["ratio_peak_rss"] = q["peak_rss_mb"] / p["peak_rss_mb"]
        part["ratio_train_peak_increase"] = q["train_peak_increase_mb"] / p["train_peak_increase_mb"]
    return part


# ------------------------------------------------------------------- reporting


def render_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# SFT benchmark (CPU)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('mem_total_gb', '?')} GB RAM, "
        f"torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}, "
        f"Python {m['python']}; load average at start {m.get('loadavg_at_start')}; {m['date']}.",
        "Shared, noisy machine: read the ratios, not the absolute numbers. Every variant ran in its own "
        "subprocess; peak memory is the child's `ru_maxrss`.",
        f"Command: `{res['command']}`",
        "",
    ]
    a = res.get("loss")
    if a:
        c = a["config"]
        lines += [
            "## a. LM head + cross-entropy: memory and time (forward + backward)",
            "",
            f"N={c['tokens']} tokens (all targets), V={c['vocab']}, H={c['hidden']}, fp32, chunk {c['chunk_size']} "
            f"rows. Full logits would be {c['logits_mb']:.0f} MB; the weight gradient [V, H], which both must "
            f"produce, is {c['weight_grad_mb']:.0f} MB.",
        ]
        if c["hidden"] != 2560:
            lines.append(f"Hidden {c['hidden']} instead of Qwen3-4B's 2560 (`--loss-hidden`), to save time.")
        lines += [
            "",
            "| loss | peak RSS increase (MB) | fwd (s) | bwd (s) | fwd+bwd (s) | loss |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for impl in ("chunked", "reference"):
            r = a[impl]
            name = "chunked_linear_cross_entropy" if impl == "chunked" else "reference (materialised)"
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error']} | | | | |")
            else:
                lines.append(f"| {name} | {r['peak_increase_mb']:.0f} | {r['fwd_s']:.1f} | {r['bwd_s']:.2f} | "
                             f"{r['fwd_bwd_s']:.1f} | {r['loss']:.3f} |")
        if "ratio_peak_increase" in a:
            ag = a["agreement"]
            ok = "meets" if a["ratio_peak_increase"] <= 0.25 else "misses"
            lines += [
                f"| **ratio chunked/reference** | **{a['ratio_peak_increase']:.3f}** | | | "
                f"**{a['ratio_time']:.2f}** | |",
                "",
                f"Agreement: loss |diff| {ag['loss_abs_diff']:.2e} (relative {ag['loss_rel_diff']:.1e}); "
                f"grad hidden max |diff| {ag['grad_hidden_max_abs_diff']:.2e} (max |grad| "
                f"{ag['grad_hidden_max_abs']:.2e}); grad weight max |diff| {ag['grad_weight_max_abs_diff']:.2e} "
                f"(max |grad| {ag['grad_weight_max_abs']:.2e}); token counts equal: {ag['count_equal']}.",
                "",
                f"The peak-memory ratio {a['ratio_peak_increase']:.3f} {ok} the issue's target (<= 0.25).",
            ]
    b = res.get("sft")
    if b:
        c = b["config"]
        lines += [
            "",
            "## b. SFT step throughput (same data, model, seed and sample order)",
            "",
            f"Model `{c['model']}` in fp32; the shipped demo dataset rendered with its tokenizer "
            f"(max_length {c['max_length']}); {c['samples_per_step']} samples per optimizer step; "
            f"{c['warmup_steps']} warmup step(s) then {c['steps']} measured; AdamW lr {c['lr']}, no weight decay, "
            f"no clipping. qed: packed micro-batches of <= {c['micro_batch_tokens']} tokens + "
            f"CausalLMWithLoss('chunked') + accumulate_step_gradients. plain: padded micro-batches of "
            f"{c['micro_batch_size']} + `model(...).logits` + F.cross_entropy / step target tokens. "
            "tokens/s counts real tokens (no padding) over the measured steps. "
            f"Schedule: {b.get('schedule', '?')}.",
            "",
            "| variant | tokens/s | padding share | peak RSS (MB) | train peak increase (MB) | "
            "step losses (warmup first) |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name in ("qed", "plain", "trl"):
            r = b.get(name)
            if r is None:
                continue
            if "error" in r:
                reason = r["error"] if r["error"].startswith("not run") else "not run: " + r["error"]
                lines.append(f"| {name} | {reason} | | | | |")
                continue
            losses = [s["loss"] for s in r["steps"]] if "steps" in r else r["losses"]
            label = name if name != "trl" else f"trl {r['trl']} SFTTrainer (reference; transformers {r['transformers']})"
            lines.append(
                f"| {label} | {r['tokens_per_s']:.0f} | {r['padding_share']:.1%} | {r['peak_rss_mb']:.0f} | "
                f"{r['train_peak_increase_mb']:.0f} | {', '.join(f'{x:.6f}' for x in losses)} |")
        if "ratio_tokens_per_s" in b:
            rel = b["loss_rel_diff_per_step"]
            ok = "meets" if b["ratio_tokens_per_s"] >= 1.0 else "misses"
            lines += [
                f"| **ratio qed/plain** | **{b['ratio_tokens_per_s']:.2f}** | | **{b['ratio_peak_rss']:.2f}** | "
                f"**{b['ratio_train_peak_increase']:.2f}** | |",
                "",
                "Per-step qed/plain tokens/s ratios (sorted): "
                + ", ".join(f"{x:.2f}" for x in b["ratio_tokens_per_s_per_step"]) + ".",
                f"Loss agreement qed vs plain, relative |diff| per step: {', '.join(f'{x:.1e}' for x in rel)}; "
                f"same target-token counts every step: {b['target_tokens_equal']}.",
                f"Throughput ratio {b['ratio_tokens_per_s']:.2f} {ok} the issue's target (qed tokens/s >= plain's).",
            ]
    if res.get("notes"):
        lines += ["", "## Interpretation", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def interpret(res: dict) -> list[str]:
    notes = []
    a = res.get("loss")
    if a and "ratio_peak_increase" in a:
        c = a["config"]
        ch = a["chunked"]
        wg = c["weight_grad_mb"]
        chunk = c["chunk_size"] * c["vocab"] * 4 / MB
        gh = c["tokens"] * c["hidden"] * 4 / MB
        est = wg + chunk + gh
        notes.append(
            f"Loss memory: the chunked loss peaks at {ch['peak_increase_mb']:.0f} MB over its inputs against "
            f"{a['reference']['peak_increase_mb']:.0f} MB for the materialised one (ratio "
            f"{a['ratio_peak_increase']:.3f}); the reference holds ~3 copies of the [N, V] fp32 logits in "
            f"backward ({3 * c['logits_mb']:.0f} MB). The chunked loss holds one fp32 weight gradient "
            f"({wg:.0f} MB, which any implementation must produce), one [chunk, V] logits buffer "
            f"({chunk:.0f} MB: logsumexp and softmax are done in place in it) and grad hidden ({gh:.0f} MB), "
            f"~{est:.0f} MB; backward scales the weight gradient in place and hands the buffer to autograd, "
            "so no second [V, H] copy exists. The ratio grows with H (the [V, H] gradient does) and with "
            "chunk_size.")
        notes.append(
            f"Loss time: chunked/reference fwd+bwd {a['ratio_time']:.2f}; the chunked loss does all its work "
            "in forward (backward is a rescale), so compare fwd+bwd, not the parts.")
    b = res.get("sft")
    if b and "ratio_tokens_per_s" in b:
        q, p, c_b = b["qed"], b["plain"], b["config"]
        notes.append(
            f"Throughput: qed {q['tokens_per_s']:.0f} vs plain {p['tokens_per_s']:.0f} real tokens/s "
            f"(ratio {b['ratio_tokens_per_s']:.2f}); plain spends {p['padding_share']:.1%} of its positions "
            f"on padding, qed {q['padding_share']:.1%}. Losses agree to "
            f"{max(b['loss_rel_diff_per_step']):.1e} relative at worst over all steps "
            f"(first step {b['loss_rel_diff_per_step'][0]:.1e}): both are the mean over the same trained tokens.")
        if b["ratio_tokens_per_s"] < 1.0:
            rows = [mb[1] for s in q["steps"] for mb in s["micro_batches"]]
            notes.append(
                f"Why qed is not faster here: a packed row (up to {c_b['micro_batch_tokens']} tokens, "
                f"{min(rows)}-{max(rows)} in these steps, ~5 samples) runs attention over the whole row with a "
                "block-diagonal mask; sdpa on CPU computes all T^2 scores, so a row of k samples does ~k times "
                "the attention work of the same samples padded separately. Packing saves the padding "
                f"({p['padding_share']:.1%} here) but pays that back and more at this model size. A kernel that "
                "skips the masked blocks (FlashAttention-2 varlen, flex attention) removes the extra work on GPU; "
                "smaller packed rows (--micro-batch-tokens) cut it on CPU.")
        notes.append(
            f"Memory: peak RSS qed/plain {b['ratio_peak_rss']:.2f} (whole process, model and AdamW state "
            f"included; increase during training {b['ratio_train_peak_increase']:.2f}). At this vocabulary "
            "(49,152) and micro-batch size the logits are a small share of the step's memory; part a shows "
            "where the chunked loss matters.")
    t = b.get("trl") if b else None
    if t and "error" not in t:
        notes.append(
            f"TRL {t['trl']} (its own venv: transformers {t['transformers']}, torch {t['torch']}) ran the same "
            f"rows in the same order, one padded batch of {b['config']['samples_per_step']} per step, no "
            f"gradient checkpointing, fp32: {t['tokens_per_s']:.0f} tokens/s. Its loss is close but not "
            "identical: TRL tokenizes the prompt/completion itself and also trains the newline the chat "
            "template writes after <|im_end|> (qed drops it), and it computes entropy/accuracy metrics each step.")
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="demo, tiny, or a model directory (default: demo)")
    ap.add_argument("--steps", type=int, default=3, help="measured optimizer steps per variant")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--samples-per-step", type=int, default=10)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--micro-batch-tokens", type=int, default=1024, help="qed packed row length (the demo config's)")
    ap.add_argument("--micro-batch-size", type=int, default=4, help="plain padded micro-batch size")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss-tokens", type=int, default=4096)
    ap.add_argument("--loss-vocab", type=int, default=151936)
    ap.add_argument("--loss-hidden", type=int, default=2560,
                    help="part a hidden size (Qwen3-4B's 2560; 1024 halves part a's ~2 minutes on 2 cores)")
    ap.add_argument("--loss-chunk-size", type=int, default=256, help="the project default")
    ap.add_argument("--skip-loss", action="store_true", help="skip part a")
    ap.add_argument("--skip-sft", action="store_true", help="skip part b")
    ap.add_argument("--skip-variant", action="append", default=[], choices=["qed", "plain"],
                    help="skip one part-b variant (repeatable; for quick checks)")
    ap.add_argument("--sequential", action="store_true",
                    help="run qed and plain one after the other instead of interleaving their steps")
    ap.add_argument("--trl-python", default=None, help="python of a separate venv with trl installed")
    ap.add_argument("--trl-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--name", default="sft", help="results file stem: <out>/<name>.md and .json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(Path(args.child_spec).read_text())
        result = {"loss": child_loss, "sft": child_sft}[args.child](spec)
        Path(args.child_result).write_text(json.dumps(result))
        return 0

    sys.path.insert(0, str(SRC))
    t0 = time.perf_counter()
    res: dict = {"machine": sft_machine_info(), "command": command_line("sft", argv)}
    print(json.dumps(res["machine"]), flush=True)
    if not args.skip_loss:
        res["loss"] = run_loss_part(args)
    if not args.skip_sft:
        res["sft"] = run_sft_part(args)
    res["notes"] = interpret(res)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    md = render_markdown(res) + f"\nTotal benchmark wall time: {res['total_s']:.0f} s.\n"
    paths = write_results(args.out, args.name, md, res)
    print(md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
