"""The TensorBoard runs of earlier versions, one per cell, read so that a resumed run adopts them into its curves."""

from __future__ import annotations

from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

from benchsuite.results.event_files import EVENT_FILE_PREFIX, read_events


def read_per_cell_run(run_dir: Path, angle: str, step: int, detailed: bool) -> tuple[dict[str, float], float, float, list[Event]]:
    """A per-cell run as ``RunLogs`` logs a cell: metrics, seconds, peak MiB and, if ``detailed``, detail events.

    ``angle`` (``theta=030.0``) suffixes the detail tags, as new cells' are; overlays move to the
    cell's θ ``step`` while training curves keep their own steps.
    """
    metrics, seconds, peak_mb, details = {}, float("nan"), float("nan"), []
    for path in sorted(run_dir.glob(f"{EVENT_FILE_PREFIX}*")):
        for event in read_events(path):
            kept = []
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if value.tag.startswith("metrics/"):
                    metrics[value.tag[len("metrics/") :]] = value.simple_value
                elif value.tag == "time/cell_seconds":
                    seconds = value.simple_value
                elif value.tag == "memory/peak_mb":
                    peak_mb = value.simple_value
                elif detailed and kind in ("simple_value", "image"):
                    kept.append(Summary.Value(tag=f"{value.tag}/{angle}", **{kind: getattr(value, kind)}))
            if kept:
                image = kept[0].WhichOneof("value") == "image"
                details.append(Event(wall_time=event.wall_time, step=step if image else event.step, summary=Summary(value=kept)))
    return metrics, seconds, peak_mb, details
