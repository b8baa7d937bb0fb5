"""TensorBoard's event files, written and read without TensorFlow: the summaries benchsuite logs, TFRecord framing,
an unbuffered writer, a reader that stops at a damaged record, and removal that touches nothing else."""

from __future__ import annotations

import io
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

EVENT_FILE_PREFIX = "events.out.tfevents."


def scalar_value(tag: str, value: float) -> Summary.Value:
    """A scalar summary value, one point of the chart ``tag``."""
    return Summary.Value(tag=tag, simple_value=value)


def image_value(overlay: np.ndarray, tag: str) -> Summary.Value:
    """An RGB overlay [3, H, W] in [0, 1] as a PNG image summary."""
    pixels = np.round(overlay.transpose(1, 2, 0) * 255).astype(np.uint8)
    encoded = io.BytesIO()
    # zlib's fastest level: PNG encoding is much of a detailed cell's logging time (docs/design.md).
    Image.fromarray(pixels).save(encoded, format="PNG", compress_level=1)
    height, width = pixels.shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded.getvalue())
    return Summary.Value(tag=tag, image=image)


def hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    """A summary carrying hparams plugin data, as the plugin's own summary functions build it."""
    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return Summary(value=[value])


def _record(data: bytes) -> bytes:
    """``data`` framed as a TFRecord, the format of event files: length, its CRC, data, its CRC."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def read_events(path: Path) -> Iterator[Event]:
    """The events of one event file, up to the first record that is cut short or damaged."""
    data = path.read_bytes()
    start = 0
    while start + 12 <= len(data):
        header = data[start : start + 8]
        end = start + 12 + struct.unpack("<Q", header)[0]
        if struct.unpack_from("<I", data, start + 8)[0] != masked_crc32c(header) or end + 4 > len(data):
            return  # a run killed mid-write (or a damaged file): TensorBoard stops reading there too
        try:
            yield Event.FromString(data[start + 12 : end])
        except DecodeError:
            return
        start = end + 4


def remove_event_files(directory: Path, *, recursive: bool) -> None:
    """Remove the event files in ``directory`` (and, if ``recursive``, below it and the directories left empty)."""
    # Only event files are removed, never anything else a user put there; directories that
    # held nothing else go too, so that no empty run lingers in TensorBoard's run list.
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*") if recursive else directory.iterdir(), reverse=True):
        if path.is_file() and path.name.startswith(EVENT_FILE_PREFIX):
            path.unlink()
        elif recursive and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


class EventFile:
    """A new event file in ``run_dir``, written unbuffered: each :meth:`write` is one ``write`` call.

    One call per cell means a killed run leaves each cell's records whole or absent, so the
    file stays readable and a cell is never half logged (a machine crash may still cut the
    last record short, which :func:`read_events` and TensorBoard both stop at).
    """

    _serial = itertools.count()  # orders the files one process opens within the same second

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        name = f"{EVENT_FILE_PREFIX}{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(self._serial):06d}"
        self._file = (run_dir / name).open("xb", buffering=0)
        self.write([Event(wall_time=time.time(), file_version="brain.Event:2")])

    def write(self, events: Iterable[Event]) -> None:
        data = memoryview(b"".join(_record(event.SerializeToString()) for event in events))
        while data:  # a regular file takes it all at once; a signal may cut a write short
            data = data[self._file.write(data) :]

    def close(self) -> None:
        self._file.close()
