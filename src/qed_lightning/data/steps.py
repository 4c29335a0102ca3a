"""Optimizer-step batches: each item the SFT loader yields is one optimizer step's
samples for this rank, already split into token-bounded micro-batches. Knowing the
whole step up front is what lets the loss use one global token count as normaliser,
however the samples are packed or accumulated."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from qed_lightning.data.packing import PackedBatch, collate_packed, collate_padded, pack_examples
from qed_lightning.data.rendering import TokenizedExample


@dataclass
class StepBatch:
    """One optimizer step for one rank."""

    micro_batches: list[PackedBatch]
    num_samples: int
    num_tokens: int  # real (non-padding) tokens

    @property
    def num_target_tokens(self) -> int:
        # Every sample's first label is ignored, so no label is lost to the shift.
        return sum(mb.num_trained_tokens() for mb in self.micro_batches)


def balance_by_tokens(indices: Sequence[int], lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Splits one step's example ``indices`` into ``parts`` shares of near-equal token
    counts: longest first, each to the share with the fewest tokens so far (ties: the
    lower share, then the earlier position), so every rank computes the same split.
    Each share keeps the step's order. With at least ``parts`` indices no share is empty.

    Ranks wait for the slowest at every step; dealing a step round-robin can put two
    45k-token traces on one rank and two 5k ones on another."""
    loads = [0] * parts
    shares: list[list[int]] = [[] for _ in range(parts)]
    for pos in sorted(range(len(indices)), key=lambda i: (-lengths[indices[i]], i)):
        target = min(range(parts), key=lambda r: (loads[r], r))
        loads[target] += lengths[indices[pos]]
        shares[target].append(pos)
    return [[indices[pos] for pos in sorted(share)] for share in shares]


class StepSampler(torch.utils.data.Sampler[list[int]]):
    """Yields, per optimizer step, this rank's share of ``samples_per_step`` example
    indices; reshuffled each epoch from ``seed`` (Lightning calls ``set_epoch``). With
    ``lengths`` (tokens per example) the step is split between ranks by tokens
    (``balance_by_tokens``), else round-robin."""

    def __init__(
        self,
        num_examples: int,
        samples_per_step: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        lengths: Sequence[int] | None = None,
    ) -> None:
        if samples_per_step < world_size:
            raise ValueError(f"samples_per_step ({samples_per_step}) must be >= world size ({world_size})")
        self.num_examples = num_examples
        self.samples_per_step = samples_per_step
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.lengths = list(lengths) if lengths is not None else None
        if self.lengths is not None and len(self.lengths) != num_examples:
            raise ValueError(f"{len(self.lengths)} lengths for {num_examples} examples")
        self.epoch = 0
        self.skip_steps = 0  # steps of the current epoch a resumed run already trained on

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> "StepSampler":
        # Lightning calls ``set_epoch`` on ``dataloader.sampler`` and on
        # ``dataloader.batch_sampler.sampler`` only; this batch sampler is its own sampler.
        return self

    def __len__(self) -> int:
        return math.ceil(self.num_examples / self.samples_per_step)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_examples, generator=gen).tolist()
        else:
            order = list(range(self.num_examples))
        skip, self.skip_steps = self.skip_steps, 0  # only the epoch the run resumed in
        for start in range(skip * self.samples_per_step, self.num_examples, self.samples_per_step):
            step = order[start : start + self.samples_per_step]
            if self.lengths is None or self.world_size == 1:
                share = step[self.rank :: self.world_size]
            else:
                share = balance_by_tokens(step, self.lengths, self.world_size)[self.rank]
            # A short last step can leave a rank without samples; it repeats one so
            # every rank runs the same number of collectives (its labels are zeroed).
            yield share if share else [-1 - step[0]]


class StepCollator:
    """Turns one step's examples into micro-batches: packed rows of at most
    ``micro_batch_tokens`` tokens, or padded rows of ``micro_batch_size`` samples."""

    def __init__(self, pad_id: int, *, packing: bool, micro_batch_tokens: int, micro_batch_size: int) -> None:
        self.pad_id = pad_id
        self.packing = packing
        self.micro_batch_tokens = micro_batch_tokens
        self.micro_batch_size = micro_batch_size

    def __call__(self, examples: Sequence[TokenizedExample]) -> StepBatch:
        if self.packing:
            bins = pack_examples(list(examples), self.micro_batch_tokens)
            micro = [collate_packed([b], self.pad_id) for b in bins]
        else:
            micro = [
                collate_padded(list(examples[i : i + self.micro_batch_size]), self.pad_id)
                for i in range(0, len(examples), self.micro_batch_size)
            ]
        return StepBatch(
            micro_batches=micro,
            num_samples=len(examples),
            num_tokens=sum(len(ex.input_ids) for ex in examples),
        )


class ExampleList(torch.utils.data.Dataset):
    """Tokenized examples; a negative index (see ``StepSampler``) is a padding copy
    of example ``-1 - index`` whose labels are all ignored."""

    def __init__(self, examples: Sequence[TokenizedExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> TokenizedExample:
        if index >= 0:
            return self.examples[index]
        ex = self.examples[-1 - index]
        return TokenizedExample(id=f"{ex.id}#pad", input_ids=ex.input_ids, labels=[-100] * len(ex.labels))
