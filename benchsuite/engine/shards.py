"""An earlier version's run directory, one NetCDF shard per cell in ``cells/``, converted into a part on resume."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection

import numpy as np
import xarray as xr

from benchsuite.engine.grid import Cell
from benchsuite.results import cube as names
from benchsuite.results.cube import ENGINE
from benchsuite.results.parts import Variable
from benchsuite.results.store import RunStore


def convert_shards(store: RunStore, detail: Collection[float]) -> int:
    """Turn the per-cell NetCDF shards of an earlier version (``cells/<key>.nc``) into one part; returns how many.

    The part is written before ``cells/`` is removed, so an interrupted conversion loses
    nothing (the next resume converts again, and a key's last row wins). The cells at the
    angles in ``detail`` keep their saliency examples, as new results do. A shard that cannot
    be read goes to ``parts/unreadable/`` and its cell runs again.
    """
    shards_dir = store.run_dir / "cells"
    if not shards_dir.is_dir():
        return 0
    rows: list[tuple[Cell, dict[str, Variable]]] = []
    for path in sorted(shards_dir.glob("*.nc")):
        try:
            shard = xr.load_dataset(path, engine=ENGINE)
        except (OSError, ValueError):
            (store.parts_dir / "unreadable").mkdir(parents=True, exist_ok=True)
            os.replace(path, store.parts_dir / "unreadable" / path.name)
            continue
        first = all(cell.dataset != shard.attrs[names.DATASET] for cell, _ in rows)
        rows.append(_shard_row(shard, detail, first))
    if rows:
        store.write_part(rows)
    shutil.rmtree(shards_dir)
    return len(rows)


def _shard_row(shard: xr.Dataset, detail: Collection[float], first: bool) -> tuple[Cell, dict[str, Variable]]:
    """A shard of the earlier per-cell layout as a part's row: its cell (coordinates and key) and variables."""
    attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in shard.attrs.items()}
    coords = {axis: attrs[axis] for axis in names.AXES}
    swept = {k: v for k, v in attrs.items() if k not in {*names.AXES, "key", "config"}}
    cell = Cell(**coords, config=json.loads(attrs["config"]), key=attrs["key"], swept=swept)
    keep = cell.theta in detail
    variables = {}
    for name, var in shard.data_vars.items():
        level = "detail" if name == names.SALIENCY_EXAMPLE else var.attrs.get("level", "cell")
        if (level == "detail" and not keep) or (level == "dataset" and not (keep or first)):
            continue
        values = var.values.item() if var.ndim == 0 else var.values
        attrs_out = {k: str(v) for k, v in var.attrs.items() if k != "level"}
        variables[str(name)] = Variable(tuple(str(d) for d in var.dims), values, attrs_out, level)
    return cell, variables
