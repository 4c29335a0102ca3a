"""Packing tokenized examples into rows, and collating rows into tensors.

Packed rows carry no attention mask: each sample's ``position_ids`` restart at 0, and
transformers (``masking_utils.find_packed_sequence_indices``, used by the sdpa, eager
and flex paths) turns every position reset into a sequence boundary, so a token only
attends within its own sample. It does so only when ``attention_mask`` is None *and*
there is no KV cache, so a packed forward must pass ``use_cache=False`` (in eval mode
the model would otherwise build a cache and silently attend across samples);
:meth:`PackedBatch.model_kwargs` does this. FlashAttention-2 reads the same position
resets to build its varlen ``cu_seqlens``, but only for a batch of one row
(``modeling_flash_attention_utils._is_packed_sequence``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from qed_lightning.data.rendering import IGNORE_INDEX, TokenizedExample

__all__ = ["PackedBatch", "pack_examples", "collate_packed", "collate_padded"]


@dataclass
class PackedBatch:
    """A batch ready for a causal LM forward.

    Args:
        input_ids: ``[B, T]`` long token ids, right-padded with the pad id.
        labels: ``[B, T]`` long, ``IGNORE_INDEX`` where not trained (unshifted).
        position_ids: ``[B, T]`` long; restart at 0 at every sample boundary.
        attention_mask: ``[B, T]`` long 1/0 for padded batches; None for packed ones
            (boundaries come from ``position_ids``).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None

    def model_kwargs(self) -> dict[str, Any]:
        """Forward kwargs (no labels); ``use_cache=False`` keeps packed masking on."""
        kwargs: dict[str, Any] = {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "use_cache": False,
        }
        if self.attention_mask is not None:
            kwargs["attention_mask"] = self.attention_mask
        return kwargs

    def num_trained_tokens(self) -> int:
        """Number of label positions that contribute to the loss."""
        return int((self.labels != IGNORE_INDEX).sum())


def pack_examples(examples: Sequence[TokenizedExample], max_tokens: int) -> list[list[TokenizedExample]]:
    """Groups examples into bins of total length <= ``max_tokens`` (first-fit decreasing).

    Deterministic: examples are placed longest first, ties in input order, each into
    the first bin with room; bins are returned in the order they were opened.

    Args:
        examples: Tokenized examples (already filtered to fit).
        max_tokens: Capacity of one packed row.

    Returns:
        Bins, each a list of examples; every input example appears exactly once.

    Raises:
        ValueError: If ``max_tokens`` < 1 or an example is longer than ``max_tokens``
            (naming it; over-long examples are meant to be filtered upstream).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    for ex in examples:
        if len(ex.input_ids) > max_tokens:
            raise ValueError(f"example {ex.id!r} has {len(ex.input_ids)} tokens > max_tokens={max_tokens}")
    # sorted() is stable, so equal lengths keep their input order.
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    bins: list[list[TokenizedExample]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i].input_ids)
        slot = next((b for b, room in enumerate(free) if room >= n), None)
        if slot is None:
            bins.append([])
            free.append(max_tokens)
            slot = len(bins) - 1
        bins[slot].append(examples[i])
        free[slot] -= n
    return bins


def _pad_rows(rows: list[list[int]], value: int, width: int) -> torch.Tensor:
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)  # [B, T]


def collate_packed(bins: Sequence[Sequence[TokenizedExample]], pad_id: int) -> PackedBatch:
    """Concatenates each bin into one row; samples are separated by position resets.

    Each sample's first label is forced to ``IGNORE_INDEX``: the loss predicts label
    ``t+1`` from token ``t``, so otherwise the last token of one sample would be
    trained to predict the first token of the next. Padding gets pad ids, ignored
    labels, and its own positions ``0, 1, ...`` so it forms a separate segment.

    Args:
        bins: Output of :func:`pack_examples` (each bin non-empty).
        pad_id: Token id used for right padding.

    Returns:
        A batch with ``attention_mask=None``.
    """
    if not bins or any(len(b) == 0 for b in bins):
        raise ValueError("collate_packed needs at least one bin and no empty bins")
    ids_rows, label_rows, pos_rows = [], [], []
    for samples in bins:
        ids, labels, pos = [], [], []
        for ex in samples:
            ids += ex.input_ids
            labels += [IGNORE_INDEX] + ex.labels[1:]
            pos += list(range(len(ex.input_ids)))
        ids_rows.append(ids)
        label_rows.append(labels)
        pos_rows.append(pos)
    width = max(len(r) for r in ids_rows)
    for pos in pos_rows:
        pos += list(range(width - len(pos)))
    return PackedBatch(
        input_ids=_pad_rows(ids_rows, pad_id, width),
        labels=_pad_rows(label_rows, IGNORE_INDEX, width),
        position_ids=_pad_rows(pos_rows, 0, width),
        attention_mask=None,
    )


def collate_padded(examples: Sequence[TokenizedExample], pad_id: int) -> PackedBatch:
    """One example per row, right-padded, with a 1/0 attention mask.

    Args:
        examples: Tokenized examples (non-empty).
        pad_id: Token id used for right padding.

    Returns:
        A batch whose ``position_ids`` are ``0..T-1`` on every row (padding is masked).
    """
    if not examples:
        raise ValueError("collate_padded needs at least one example")
    width = max(len(ex.input_ids) for ex in examples)
    return PackedBatch(
        input_ids=_pad_rows([list(ex.input_ids) for ex in examples], pad_id, width),
        labels=_pad_rows([list(ex.labels) for ex in examples], IGNORE_INDEX, width),
        position_ids=torch.arange(width, dtype=torch.long).expand(len(examples), width).clone(),  # [B, T]
        attention_mask=_pad_rows([[1] * len(ex.input_ids) for ex in examples], 0, width),
    )
