"""Which attention kernel the trainer's model uses.

Both trainers pack several samples into one row and restart the position ids at each
sample. transformers' ``flash_attention_2`` turns those position ids into varlen
boundaries (``cu_seqlens``): each sample attends only to itself at no extra cost. Under
``sdpa`` (transformers' default) the same isolation needs a dense ``[L, L]`` mask, which
keeps SDPA off its flash kernel: at a 50k-token row that is a 2.3 GiB boolean mask and
attention over every tile of the row, not only the samples' own blocks. The result is
the same; the cost is not. On CUDA the choice therefore prefers flash attention, and
says so loudly when it cannot have it.
"""
from __future__ import annotations

import logging

__all__ = ["choose_attention"]

log = logging.getLogger(__name__)

PACKED_SDPA_WARNING = (
    "flash-attn is not installed: packed rows will use SDPA with a dense [L, L] mask (correct, but slow "
    "and memory-hungry at long rows). Install flash-attn, or set attn_implementation explicitly to silence this."
)


def choose_attention(requested: str | None, cuda: bool, flash_available: bool) -> str | None:
    """The ``attn_implementation`` to load the trainer's model with.

    ``requested`` wins when set. Otherwise: on CUDA, ``flash_attention_2`` when flash-attn
    is importable, else ``sdpa`` with a warning; on CPU, None (transformers' default,
    SDPA with masks: flash-attn does not run there).
    """
    if requested:
        return requested
    if not cuda:
        return None
    if flash_available:
        return "flash_attention_2"
    log.warning(PACKED_SDPA_WARNING)
    return "sdpa"
