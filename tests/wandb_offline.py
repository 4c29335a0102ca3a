"""Reads what an offline W&B run recorded, with wandb's own protobuf records: its
``run-<id>.wandb`` file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of
records framed as crc u32, length u16, type u8; a record may span blocks)."""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
FRAME = 7  # crc u32, length u16, type u8
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """One offline run directory's records: its id, history rows, config."""

    directory: Path
    run_id: str = ""
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _payloads(data: bytes):
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, parts = FRAME, b""
    while pos + FRAME <= len(data):
        left = BLOCK - pos % BLOCK
        if left < FRAME:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + FRAME])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + FRAME:pos + FRAME + length], pos + FRAME + length
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            yield parts


def _read(path: Path) -> tuple[OfflineRun, bool]:
    from wandb.proto import wandb_internal_pb2

    run, ended = OfflineRun(path.parent), False
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
        elif kind == "history":
            run.history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
        elif kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "exit":
            ended = True
    return run, ended


def read_offline_run(directory: Path, wait_s: float = 60.0) -> OfflineRun:
    """The run's records once its ``exit`` record is written: W&B's service process
    writes the file on its own, and may still be flushing it when ``wandb.finish()``
    returns (after ``wait_s``, whatever is there)."""
    [path] = Path(directory).glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    while True:
        run, ended = _read(path)
        if ended or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``root``, oldest first."""
    return [read_offline_run(d) for d in sorted(Path(root).rglob("offline-run-*")) if d.is_dir()]
