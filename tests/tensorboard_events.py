"""Reads what TensorBoard would show, without TensorBoard: the text and scalar
summaries of the event files under a directory."""
from __future__ import annotations

import struct
from pathlib import Path


def _events(directory: Path):
    """Every event in the event files (TFRecord framing: length u64, its crc u32,
    payload, crc u32)."""
    from tensorboardX.proto import event_pb2

    for path in sorted(Path(directory).rglob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            yield event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4


def tensorboard_texts(directory: Path) -> list[tuple[str, int, str]]:
    """(tag, step, text) of every text summary in the event files."""
    return [(value.tag, event.step, value.tensor.string_val[0].decode())
            for event in _events(directory) for value in event.summary.value
            if value.metadata.plugin_data.plugin_name == "text"]


def tensorboard_scalars(directory: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar summary in the event files."""
    return [(value.tag, event.step, value.simple_value)
            for event in _events(directory) for value in event.summary.value if value.HasField("simple_value")]
