"""Step-time model of the RL schedules, and its projection to the paper's run.

A step's stages: G (generate the batch), J (grade it), R (train on it), P (push the
weights). What each schedule waits for, per step, in steady state:

* ``sequential`` (lag 0): G + J + R + P.
* ``judge_overlap`` (lag 0, ``parts`` parts): G + J / parts + R + P (each part's
  grading hides behind the next part's generation; the last part's does not).
* ``lag1_inline`` (``max_lag: 1``, batches ahead generated inside the step: a colocated
  engine, or a served one with ``background_generation: false``): batch t+1 generates
  (G) while batch t's grading finishes; batch t's grading started right after its own
  generation, R + P + G earlier: G + max(0, J - (R + P + G)) + R + P.
* ``lag1_background`` (served engines, ``max_lag`` >= 1): batch t+1 generates while the
  trainer waits for batch t's verdicts and trains; the push waits for the generation
  (drain). Batch t started generating one step earlier, so its grading ends G + J after
  that step began, and the step waits W = max(0, G + J - T) for it: T = max(G, W + R) + P,
  whose fixed point is T = max(G + P, R + P, (G + J + R + P) / 2) (the step is bound
  by generation, by training, or, when grading is long, by half the sequential step).
  A larger ``max_lag`` runs the same schedule (the pushes pace the generator) and only
  absorbs step-to-step variation.
* ``in_flight`` (PipelineRL's in-flight weight updates, not implemented here): the
  generators never wait for a push and the trainer never waits for a whole batch:
  max(G_throughput, R) + P_nccl, with G_throughput the batch's tokens over the
  generators' aggregate rate (no tail).

``bench/async.py --served`` checks the model against measured steps on CPU (its
per-step prediction from the step's own stage times beside the step's wall time);
:func:`paper_projection` applies it to the paper's run from the assumptions below.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PaperRun", "paper_projection", "predicted_step_s"]


def predicted_step_s(schedule: str, g: float, j: float, r: float, p: float, parts: int = 1) -> float:
    """Seconds per step of ``schedule`` from its stage times (see the module docstring)."""
    if schedule == "sequential":
        return g + j + r + p
    if schedule == "judge_overlap":
        return g + j / parts + r + p
    if schedule == "lag1_inline":
        return g + max(0.0, j - (r + p + g)) + r + p
    if schedule == "lag1_background":
        return max(g + p, r + p, (g + j + r + p) / 2)
    raise ValueError(f"unknown schedule {schedule!r}")


@dataclass
class PaperRun:
    """The paper's RL run (qed-nano-recipe.md §4) and the assumptions the projection
    rests on; each assumption says where its number comes from."""

    samples: int = 1024  # 64 problems x 16 samples [recipe]
    max_tokens: int = 49_152  # [recipe]
    prompt_tokens: int = 400  # a proof problem in the RL prompt (assumption)
    mean_completion_tokens: int = 20_000  # assumption: not published; about 40% of max_tokens
    generation_gpus: int = 56  # world.actor_fraction [recipe dev config]
    rollouts_per_engine: int = 20  # llm_max_rollouts per vLLM [recipe]: 1,120 slots >= 1,024 samples: one wave
    # Per-sequence decode rate with 20 long sequences on an H100 (assumption): a decode
    # step reads the bf16 weights (8 GB) and the 20 sequences' KV (147 KB per token for
    # Qwen3-4B: 36 layers x 8 KV heads x 128 x 2 x bf16), ~25 ms at 20 x 25k tokens on
    # 3.35 TB/s, i.e. ~40 tokens/s per sequence.
    decode_tokens_per_s_per_sequence: float = 40.0
    training_gpus: int = 32  # finetune_fraction [recipe]
    # Measured: 7,936 tokens/s for one packed 8k-token SFT step of the Qwen3-4B shape on an
    # H200 (bench/results/gpu_check.md, Liger kernels, gradient checkpointing); an H100
    # has the same bf16 peak. The RL step adds a chunked log-prob pass (small next to it).
    train_tokens_per_s_per_gpu: float = 7_936.0
    # Attention at the paper's context (assumption: the same efficiency as the dense
    # layers): per token and layer 4 x ctx x 4096 FLOPs forward against 2 x 4.02B for the
    # dense layers over all 36 layers. Tokens/s scale with 1 / (1 + a(ctx)), from the
    # measurement's mean context (8,192 tokens in 5 samples: ~820) to the paper's (half of
    # prompt + mean completion).
    measured_mean_context: int = 820
    grader_gpus: int = 8  # gpt-oss-20b, DP=8, max-num-seqs 64 [recipe]
    grader_tokens_per_grading: int = 4_000  # assumption: medium reasoning effort (max 81,920)
    grader_tokens_per_s_per_sequence: float = 60.0  # assumption: 64 sequences per GPU, MoE with 3.6B active
    grader_sequences_per_gpu: int = 64  # [recipe]
    weight_bytes: float = 8.05e9  # 4.02B parameters in bf16
    filesystem_write_gb_s: float = 2.0  # assumption: one writer to the shared filesystem
    filesystem_read_gb_s_total: float = 20.0  # assumption: aggregate read of the 56 servers' reloads
    nccl_push_s: float = 3.0  # assumption: bf16 broadcast over InfiniBand (verl reports < 300 ms for 7B in one node)

    def attention_factor(self) -> float:
        """Training FLOPs per token at the paper's context over the measurement's."""
        def share(ctx: float) -> float:  # attention FLOPs over dense FLOPs, per token
            return 4 * ctx * 4096 * 36 / (2 * 4.02e9)

        paper_context = (self.prompt_tokens + self.mean_completion_tokens) / 2
        return (1 + share(paper_context)) / (1 + share(self.measured_mean_context))

    def stages(self) -> dict[str, float]:
        """(G, J, R, P) in seconds, and P over NCCL."""
        waves = -(-self.samples // (self.generation_gpus * self.rollouts_per_engine))
        g = waves * self.max_tokens / self.decode_tokens_per_s_per_sequence  # a step waits for its longest sample
        tokens = self.samples * (self.prompt_tokens + self.mean_completion_tokens)
        r = tokens * self.attention_factor() / (self.training_gpus * self.train_tokens_per_s_per_gpu)
        grading_waves = -(-self.samples // (self.grader_gpus * self.grader_sequences_per_gpu))
        j = grading_waves * self.grader_tokens_per_grading / self.grader_tokens_per_s_per_sequence
        p = (self.weight_bytes / 1e9 / self.filesystem_write_gb_s
             + self.generation_gpus * self.weight_bytes / 1e9 / self.filesystem_read_gb_s_total)
        aggregate = self.generation_gpus * self.rollouts_per_engine * self.decode_tokens_per_s_per_sequence
        g_throughput = self.samples * self.mean_completion_tokens / aggregate
        return {"G": g, "J": j, "R": r, "P": p, "P_nccl": self.nccl_push_s, "G_throughput": g_throughput}


def paper_projection(run: PaperRun | None = None, parts: int = 4) -> dict:
    """Seconds per step of each schedule at the paper's scale, and the speed-up over the
    sequential schedule."""
    run = run or PaperRun()
    s = run.stages()
    g, j, r, p = s["G"], s["J"], s["R"], s["P"]
    steps = {
        "sequential": predicted_step_s("sequential", g, j, r, p),
        "judge_overlap": predicted_step_s("judge_overlap", g, j, r, p, parts),
        "lag1_background": predicted_step_s("lag1_background", g, j, r, p),
        "lag1_background_nccl_push": predicted_step_s("lag1_background", g, j, r, s["P_nccl"]),
        "in_flight (not implemented)": max(s["G_throughput"], r) + s["P_nccl"],
    }
    base = steps["sequential"]
    return {"assumptions": asdict(run), "stages_s": s,
            "schedules": {k: {"step_s": v, "speedup": base / v, "hours_150_steps": v * 150 / 3600}
                          for k, v in steps.items()}}
