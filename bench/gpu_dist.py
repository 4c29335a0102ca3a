"""Multi-process checks for a GPU machine (part of the GPU check; see bench/README.md).

Part ``gather`` (runs on 1..N GPUs, or on CPU with gloo for a smoke run): a
Qwen3-4B-shaped model (random init, bf16) sharded with FSDP2 (one unit per decoder
layer), then its full weights delivered to an "engine" (a preallocated copy of every
tensor on the device, as a colocated vLLM holds) two ways:

* ``layerwise``: ``qed_lightning.engines.full_weights.iter_full_weights`` (one
  parameter gathered at a time, copied, freed);
* ``full``: ``torch.distributed.checkpoint.state_dict.get_model_state_dict`` with
  ``full_state_dict=True`` (everything gathered first, then copied).

Per variant: seconds, and the peak device memory above the sharded model plus the
engine copy (what the push itself costs). Target: layerwise extra memory around one
layer's weights, full extra memory around the whole model's. The floor of the
layerwise figure is the largest single tensor (reported as ``largest_tensor``; for
this tied-embedding model the embedding, larger than a decoder layer), since
``iter_full_weights`` gathers one parameter at a time.

Exactness: the weights are a deterministic hash of (tensor name, element index), so
the reference for any rows of any tensor can be recomputed on the spot. The
first (warm-up) round of each variant checks every tensor as it is copied into the
engine, against that recomputed reference in row chunks, and records its max abs
difference; nothing is kept, so checking adds no copy of the weights (peak stays
at one gathered tensor plus one chunk). The second round is the measured one and is
not slowed by checks. ``engine_copy_exact`` is true when every engine tensor was
delivered and equal on every rank in both variants; ``check`` has the details.

Parts ``rl``, ``rl_fsdp2``, ``sft_fsdp2`` (N GPUs): a 2-step ``qed fit``
of the tiny model with ``--trainer.devices=N`` and DDP or FSDP2 (``ModelParallelStrategy``;
DeepSpeed is not among them: the modules refuse it, see
``modules/collective_steps.check_step_strategy``); RL with one colocated CUDA vLLM engine
per rank. Each passes when the run ends, both steps logged a finite loss and (RL) every
rank wrote its rollouts. Written, not run: the machines this project has been lent have
no vLLM in their image, and the session that wrote them had no GPU at all.

Run: ``torchrun --nproc_per_node=<GPUs> bench/gpu_dist.py gather`` (CPU smoke:
``torchrun --nproc_per_node=2 bench/gpu_dist.py gather --cpu --layers 2 --hidden 256
--intermediate 512 --vocab 1024``); ``python bench/gpu_dist.py rl --gpus 2`` (likewise ``rl_fsdp2``, ``sft_fsdp2``).
Writes ``<out>/gpu_dist_<part>.json`` from rank 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, write_results

sys.path.insert(0, str(REPO / "src"))
GIB = 1024**3


# Row-chunk size (elements) for filling and checking weights: bounds the temporaries
# of the hash (a few int64 tensors of this size) far below one gathered tensor.
CHUNK_ELEMS = 1 << 22
_MASK32 = 0xFFFFFFFF


def _seed(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())  # not hash(): that is salted per process


def expected_rows(name: str, shape, row0: int, row1: int, device):
    """Rows ``[row0, row1)`` of tensor ``name`` as built by :func:`build_model`: a
    32-bit integer hash of the flat element index, mapped to n/4096 with n in
    [-128, 127] (exact in bf16). Integer arithmetic only, kept below 2**63, so the
    same rows come out bit for bit whether computed at build time or at check time,
    in any chunking."""
    import torch

    row = 1
    for d in shape[1:]:
        row *= d
    h = torch.arange(row0 * row, row1 * row, dtype=torch.int64, device=device)
    h.mul_(0x9E3779B1).add_(_seed(name)).bitwise_and_(_MASK32)  # index < 2**31: no overflow
    h.bitwise_xor_(h >> 16).mul_(0x045D9F3B).bitwise_and_(_MASK32)
    h.bitwise_xor_(h >> 16).mul_(0x045D9F3B).bitwise_and_(_MASK32)
    h.bitwise_xor_(h >> 16)
    out = (h.bitwise_and_(255).sub_(128)).to(torch.bfloat16).div_(4096)
    return out.view(row1 - row0, *shape[1:])


def _row_chunks(shape):
    """``(row0, row1)`` spans of about CHUNK_ELEMS elements over dim 0."""
    row = 1
    for d in shape[1:]:
        row *= d
    step = max(1, CHUNK_ELEMS // max(row, 1))
    rows = shape[0] if len(shape) else 1
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def build_model(args, device):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      head_dim=args.head_dim, tie_word_embeddings=True)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    model = model.to_empty(device=device).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied parameter is filled once, under its first name
            assert p.numel() < 2**31 and p.dim() >= 1, (name, p.shape)
            for r0, r1 in _row_chunks(p.shape):
                p[r0:r1].copy_(expected_rows(name, p.shape, r0, r1, device))
    return model


def gather(args) -> dict:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from qed_lightning.engines.full_weights import iter_full_weights
    from qed_lightning.modules.sharding import shard_model

    cpu = args.cpu or not torch.cuda.is_available()
    dist.init_process_group("gloo" if cpu else "nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu") if cpu else torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if not cpu:
        torch.cuda.set_device(device)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("data_parallel",))
    model = shard_model(build_model(args, device), mesh)
    names = {n: p.shape for n, p in model.named_parameters()}  # tied head deduplicated: one engine tensor
    engine = {n: torch.empty(shape, dtype=torch.bfloat16, device=device) for n, shape in names.items()}
    model_bytes = sum(t.numel() * t.element_size() for t in engine.values())
    layer_bytes = sum(p.numel() * 2 for n, p in model.named_parameters() if n.startswith("model.layers.0."))
    # one parameter at a time is gathered, so the layerwise push needs at least the
    # largest single tensor on top of the engine copy, whatever the layer size
    largest = max(names, key=lambda n: names[n].numel())
    largest_bytes = names[largest].numel() * 2
    index = {n: i for i, n in enumerate(names)}

    class Check:
        """Per-tensor exactness of one push: max |engine - reference| per name, kept on
        the device (one sync at the end); a name never delivered stays at inf."""

        def __init__(self):
            self.diff = torch.full((len(index),), float("inf"), device=device)

        def __call__(self, name: str, delivered) -> None:
            worst = torch.zeros((), device=device)
            for r0, r1 in _row_chunks(delivered.shape):
                ref = expected_rows(name, names[name], r0, r1, device)
                d = (delivered[r0:r1].float() - ref.float()).abs().max()
                worst = torch.maximum(worst, torch.nan_to_num(d, nan=float("inf")))
                del ref, d
            self.diff[index[name]] = worst

        def summary(self) -> dict:
            # every rank holds its own engine copy: the worst over ranks counts
            dist.all_reduce(self.diff, op=dist.ReduceOp.MAX)
            per_tensor = dict(zip(index, self.diff.tolist()))
            bad = {n: d for n, d in per_tensor.items() if d != 0.0}
            return {"tensors": len(per_tensor), "exact": not bad, "max_abs_diff": max(per_tensor.values()),
                    "mismatched": dict(list(bad.items())[:16]), "mismatched_count": len(bad)}

    def push_layerwise(check=None):
        for name, tensor in iter_full_weights(model, include_buffers=False):
            if name in engine:  # the tied lm_head.weight arrives too; the engine holds it as the embedding
                engine[name].copy_(tensor)
                if check is not None:  # checked as it arrives, before the next gather frees it
                    check(name, engine[name])

    def push_full(check=None):
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        for name, tensor in full.items():
            if name in engine:
                engine[name].copy_(tensor)
                if check is not None:
                    check(name, engine[name])
        del full

    results, checks = {}, {}
    for round_ in (0, 1):  # round 0 warms up and checks exactness; round 1 is the measured one
        for label, fn in (("layerwise", push_layerwise), ("full", push_full)):
            for t in engine.values():  # a push must fill the engine itself, not inherit the previous one
                t.zero_()
            check = Check() if round_ == 0 else None
            if not cpu:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            dist.barrier()
            start = time.perf_counter()
            fn(check)
            if not cpu:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            extra = (torch.cuda.max_memory_allocated() - base) / GIB if not cpu else None
            if check is not None:
                # the checked push's own peak: one gathered tensor plus a chunk's temporaries
                checks[label] = {**check.summary(), "extra_peak_gib": extra}
                del check
            else:
                results[label] = {"seconds": seconds, "extra_peak_gib": extra}
    exact = all(c["exact"] for c in checks.values())
    out = {"world": world, "device": "cpu" if cpu else torch.cuda.get_device_name(device),
           "model_gib": model_bytes / GIB, "layer_gib": layer_bytes / GIB,
           "largest_tensor": {"name": largest, "gib": largest_bytes / GIB},
           "engine_copy_exact": exact, "check": checks, **results}
    dist.barrier()
    dist.destroy_process_group()
    return out if rank == 0 else {}


RUNS = {
    # part: (config, extra args, strategy args). The tiny model keeps every run to seconds.
    "rl": ("configs/demo/rl.yaml", ["--model.judge=qed_lightning.judging.RuleJudge",
                                    "--model.judge.rule=qed_lightning.judging.rules:share_of_letter_e",
                                    "--model.judge.answer_mode=whole", "--model.engine.max_model_len=512",
                                    "--model.engine.gpu_memory_utilization=0.2", "--model.sampling.max_tokens=32"],
           ["--trainer.strategy=ddp"]),
    "rl_fsdp2": ("configs/demo/rl.yaml", ["--model.judge=qed_lightning.judging.RuleJudge",
                                          "--model.judge.rule=qed_lightning.judging.rules:share_of_letter_e",
                                          "--model.judge.answer_mode=whole", "--model.engine.max_model_len=512",
                                          "--model.engine.gpu_memory_utilization=0.2",
                                          "--model.sampling.max_tokens=32"], "FSDP2"),
    "sft_fsdp2": ("configs/demo/sft.yaml", ["--data.samples_per_step=8"], "FSDP2"),
}


def qed_fit_on_gpus(args) -> dict:
    """A short ``qed fit`` of the tiny model on every GPU with the part's strategy;
    passes when the run ends, every step logged a finite loss, and (RL) every rank
    wrote its rollout records. Colocated RL needs CUDA vLLM."""
    import csv
    import math

    from qed_lightning.models import tiny

    config, extra, strategy = RUNS[args.part]
    if strategy == "FSDP2":
        strategy = ["--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
                    f"--trainer.strategy.data_parallel_size={args.gpus}", "--trainer.strategy.tensor_parallel_size=1",
                    "--trainer.strategy.save_distributed_checkpoint=false"]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny.tiny_model_dir(tmp, template="qwen3")
        cmd = [sys.executable, "-m", "qed_lightning", "fit", "--config", config, f"--model.model={model_dir}", *extra,
               f"--data.prompts_per_step={2 * args.gpus}" if "rl" in args.part else "--data.max_length=1024",
               "--trainer.max_steps=2", "--trainer.accelerator=gpu", f"--trainer.devices={args.gpus}", *strategy,
               f"--trainer.default_root_dir={tmp}", f"--trainer.logger.init_args.save_dir={tmp}",
               "--trainer.logger.init_args.version=run", "--export.enabled=false"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        runs = list(Path(tmp).glob("*/run"))
        losses, records = [], []
        if runs:
            with (runs[0] / "metrics.csv").open() as f:
                losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
            records = sorted(p.name for p in (runs[0] / "rollouts").glob("*.jsonl"))
        ok = (proc.returncode == 0 and len(losses) == 2 and all(math.isfinite(x) for x in losses)
              and ("rl" not in args.part or len(records) == 2 * args.gpus))
        return {"part": args.part, "gpus": args.gpus, "ok": ok, "returncode": proc.returncode,
                "seconds": time.perf_counter() - start, "losses": losses, "rollout_files": records,
                "stderr_tail": "" if ok else proc.stderr[-3000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=["gather", *RUNS])
    ap.add_argument("--cpu", action="store_true", help="gloo on CPU (smoke run)")
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--hidden", type=int, default=2560)
    ap.add_argument("--intermediate", type=int, default=9728)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    result = gather(args) if args.part == "gather" else qed_fit_on_gpus(args)
    if result:
        write_results(args.out, f"gpu_dist_{args.part}", None, result)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
