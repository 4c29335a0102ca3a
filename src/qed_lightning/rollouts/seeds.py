"""Per-sample seeds that depend only on what is sampled, never on how it is batched.

A seed is a hash of (run seed, step, problem id, sample index): the same sample gets
the same seed whatever the number of ranks, the batch it lands in, or a resume.
"""
from __future__ import annotations

import hashlib

__all__ = ["sample_seed"]


def sample_seed(run_seed: int, step: int, problem_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}|{step}|{problem_id}|{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF  # non-negative int32: every engine takes it
