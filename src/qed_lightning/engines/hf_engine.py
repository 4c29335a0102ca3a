"""Transformers ``generate`` behind the :class:`RolloutEngine` contract.

For machines without vLLM and for debugging: slow, but the same tokens-in/tokens-out
contract, and the same *processed* log-probs (``output_scores`` are the logits after
temperature, top-k and top-p). A fresh ``GenerationConfig`` is built from the
sampling settings, so nothing is inherited from the model's own generation config.
"""
from __future__ import annotations

import time
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import GenerationConfig

from qed_lightning.contracts import Completion, SamplingSettings
from qed_lightning.engines.weights import check_complete, tensor_bytes
from qed_lightning.models import eos_token_ids, load_policy, load_tokenizer

__all__ = ["HFEngine"]


class HFEngine:
    """Generation with a Hugging Face model (its own copy unless ``model`` is a module).

    Args:
        model: Alias, directory or hub id (loaded here), or an ``nn.Module`` to use as is.
        tokenizer: Needed only when ``model`` is a module (for EOS/pad and stop strings).
        dtype: dtype for a loaded model.
        device: Where generation runs.
    """

    def __init__(self, model: str | nn.Module, tokenizer=None, dtype: str = "float32", device: str = "cpu",
                 revision: str | None = None) -> None:
        if isinstance(model, nn.Module):
            if tokenizer is None:
                raise ValueError("HFEngine with a model object needs its tokenizer")
            self.model, self.tokenizer = model, tokenizer
        else:
            self.tokenizer = tokenizer or load_tokenizer(model, revision=revision)
            self.model = load_policy(model, revision=revision, dtype=dtype)
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._expected = set(self.model.state_dict())
        self.weight_version = 0
        self.last_sync: dict[str, float] = {}

    def _config(self, s: SamplingSettings, n: int) -> GenerationConfig:
        sample = s.temperature > 0
        return GenerationConfig(
            do_sample=sample, temperature=s.temperature if sample else None, top_p=s.top_p if sample else None,
            top_k=(s.top_k if s.top_k > 0 else 0) if sample else None, max_new_tokens=s.max_tokens,
            num_return_sequences=n, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            stop_strings=list(s.stop) or None, output_scores=True, return_dict_in_generate=True,
        )

    @torch.no_grad()
    def _run(self, prompts: Sequence[Sequence[int]], s: SamplingSettings, n: int) -> list[list[Completion]]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: generation continues at the right edge
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=self._config(s, n),
            tokenizer=self.tokenizer if s.stop else None,
        )
        new = out.sequences[:, width:]  # [B*n, T]
        logp = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B*n, T, V]
        chosen = logp.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [B*n, T]
        groups: list[list[Completion]] = [[] for _ in prompts]
        for row in range(new.shape[0]):
            tokens = new[row].tolist()
            length, reason = len(tokens), "length"
            for t, tok in enumerate(tokens):
                if tok in self.eos_ids:
                    length, reason = t + 1, "stop"  # the EOS token is part of the completion
                    break
            text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
            if reason == "length" and s.stop and any(text.endswith(x) for x in s.stop):
                reason = "stop"
            groups[row // n].append(Completion(
                prompt_ids=list(prompts[row // n]), completion_ids=tokens[:length],
                logprobs=chosen[row, :length].tolist(), finish_reason=reason, text=text,
                weight_version=self.weight_version,
            ))
        return groups

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings,
                 sample_seeds: Sequence[Sequence[int]] | None = None, regex: str | None = None) -> list[list[Completion]]:
        """Same contract as ``VLLMEngine.generate`` (``regex`` is not supported here)."""
        if regex is not None:
            raise NotImplementedError("HFEngine does not constrain decoding; use VLLMEngine for regex")
        if sample_seeds is None:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            if sampling.temperature == 0 and sampling.n > 1:
                # greedy decoding returns one sequence; its n samples are identical
                return [[c for c in group for _ in range(sampling.n)] for group in self._run(prompts, sampling, 1)]
            return self._run(prompts, sampling, sampling.n)
        groups = []
        for prompt, seeds in zip(prompts, sample_seeds, strict=True):
            group = []
            for seed in seeds:  # one sample per seed: what is drawn does not depend on batching
                torch.manual_seed(seed)
                group += self._run([prompt], sampling, 1)[0]
            groups.append(group)
        return groups

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                     version: int) -> None:
        start = time.perf_counter()
        named = dict(named_tensors)
        check_complete(named.keys(), self._expected)
        self.model.load_state_dict({k: v.detach() for k, v in named.items()}, strict=True)
        seconds = time.perf_counter() - start
        self.weight_version = version
        self.last_sync = {"sync/seconds": seconds, "sync/gb_per_s": tensor_bytes(named) / 1e9 / max(seconds, 1e-9)}

    def sleep(self) -> None:
        """Nothing to free: the model shares the process's memory like any module."""

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """No-op (see :meth:`sleep`)."""
