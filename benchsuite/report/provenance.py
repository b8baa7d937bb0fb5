"""The report's provenance section: where and when the run ran, what it cost, the versions and plugins, the suite."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from benchsuite.report.html import Table, table
from benchsuite.results.cube import (
    CREATED,
    DATASET,
    DESCRIPTION,
    DEVICE,
    DEVICE_DESCRIPTION,
    GIT_REVISION,
    PEAK_MEMORY,
    PLUGINS,
    SUITE_NAME,
    SUITE_YAML,
    TORCH_THREADS,
    VERSIONS,
    WALL_TIME,
)
from benchsuite.results.durations import readable_duration


@dataclass(frozen=True)
class Provenance:
    facts: list[tuple[str, str]]
    cost_text: str
    cost: Table | None
    memory_note: str
    versions: Table
    plugins: Table
    suite_yaml: str


def provenance(cube: xr.Dataset) -> Provenance:
    labels = {SUITE_NAME: "suite", CREATED: "created", GIT_REVISION: "git revision", DEVICE_DESCRIPTION: "device"}
    facts = [(label, str(cube.attrs.get(key, ""))) for key, label in labels.items()]
    # Per-cell values: a run resumed elsewhere, or with another thread count, shows more than one.
    for name, label in ((DEVICE, "cell devices"), (TORCH_THREADS, "torch threads")):
        if name in cube:
            values = [v for v in np.unique(cube[name].values).tolist() if v != "" and not _is_nan(v)]
            facts.append((label, ", ".join(_plain(v) for v in values)))
    finished = WALL_TIME in cube and np.isfinite(cube[WALL_TIME].values).any()
    return Provenance(
        facts=facts,
        cost_text=_cost_text(cube) if finished else "No cell has finished.",
        cost=_cost_table(cube) if finished else None,
        memory_note=f"Peak memory: {cube[PEAK_MEMORY].attrs.get(DESCRIPTION, '')}." if finished else "",
        versions=_json_table(cube.attrs.get(VERSIONS), ("package", "version")),
        plugins=_json_table(cube.attrs.get(PLUGINS), ("plugin", "distribution")),
        suite_yaml=cube.attrs.get(SUITE_YAML, ""),
    )


def _cost_text(cube: xr.Dataset) -> str:
    seconds = cube[WALL_TIME].values
    seconds = seconds[np.isfinite(seconds)]
    return (
        f"{seconds.size} cells: {readable_duration(seconds.sum())} in all; per cell median "
        f"{readable_duration(np.median(seconds))}, max {readable_duration(seconds.max())}. "
        f"Peak memory up to {np.nanmax(cube[PEAK_MEMORY].values):.0f} MiB."
    )


def _cost_table(cube: xr.Dataset) -> Table:
    """Wall time and peak memory per dataset, over its finished cells."""
    frame = cube[[WALL_TIME, PEAK_MEMORY]].to_dataframe().reset_index().dropna(subset=[WALL_TIME])
    per_dataset = (
        frame.groupby(DATASET, sort=False)
        .agg(
            cells=(WALL_TIME, "size"),
            total_s=(WALL_TIME, "sum"),
            median_s=(WALL_TIME, "median"),
            max_s=(WALL_TIME, "max"),
            peak_memory_mib=(PEAK_MEMORY, "max"),
        )
        .reset_index()
    )
    labels = {
        "total_s": "total (s)",
        "median_s": "median (s)",
        "max_s": "max (s)",
        "peak_memory_mib": "peak memory (MiB)",
    }
    formats = {"total_s": ".1f", "median_s": ".2f", "max_s": ".2f", "peak_memory_mib": ".0f"}
    return table(per_dataset, formats, labels)


def _json_table(text: str | None, columns: tuple[str, str]) -> Table:
    entries = json.loads(text) if text else {}
    return table(pd.DataFrame(list(entries.items()), columns=list(columns)))


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _plain(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
