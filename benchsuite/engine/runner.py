"""Runs a resolved suite into its run directory: skip what is done, run the rest, store as it arrives."""

from __future__ import annotations

import json
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import benchsuite
from benchsuite.api import LostGroup
from benchsuite.engine import provenance
from benchsuite.engine.building import CellFailure
from benchsuite.engine.data import worker_environment
from benchsuite.engine.grid import Cell, detail_thetas, expand, families
from benchsuite.engine.kinds import KINDS
from benchsuite.engine.pipeline import GroupTask
from benchsuite.engine.preflight import preflight
from benchsuite.engine.registry import PluginRegistry
from benchsuite.engine.shards import convert_shards
from benchsuite.engine.suite import ResolvedSuite
from benchsuite.engine.training import NonFiniteLoss
from benchsuite.results import cube as names
from benchsuite.results.cell_result import CellResult
from benchsuite.results.errors import BenchsuiteError, RunError, SuiteError, sentence
from benchsuite.results.store import PartWriter, RunStore, utc_now
from benchsuite.results.tensorboard import RunLogs


class MetricWarning(UserWarning):
    """Some evaluation images gave NaN for a metric (e.g. an empty mask)."""


class NegativesWarning(UserWarning):
    """Cells ended training with some of their method's negatives still placeholders (MoCo's queue not yet full of real keys)."""


class StoreWarning(UserWarning):
    """About the stored results: a damaged part set aside (its cells run again), or an earlier layout converted."""


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    cube_path: Path
    cells_total: int
    cells_run: int
    cells_skipped: int


def _manifest(resolved: ResolvedSuite, cells: list[Cell]) -> dict[str, Any]:
    """Every cell's key and the resolved configuration of everything that enters a cell."""
    config: dict[str, Any] = {
        "data": resolved.suite.data.model_dump(mode="json"),
        names.THETA: resolved.suite.thetas,
        "seeds": resolved.suite.seeds,
    }
    if resolved.sweeps:  # absent without a sweep, so the manifests of earlier runs still match
        config["sweep"] = {sweep.path: list(sweep.values) for sweep in resolved.sweeps}
    for kind in KINDS:
        if kind.cell_key is not None:
            components = {label: c.config() for label, c in resolved.components[kind.name].items()}
            config[kind.suite_key] = components[kind.suite_key] if kind.shape == "one" else components
    return {
        "suite": resolved.name,
        "benchsuite_version": benchsuite.__version__,
        "cells": {c.key: c.coords for c in cells},
        "config": config,
    }


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, for explaining a refused resume."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub} added")
            elif key not in new:
                out.append(f"{sub} removed")
            else:
                out.extend(_differences(old[key], new[key], sub))
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def _components(config: Any, path: str = "") -> dict[str, dict[str, Any]]:
    """Every component config (a mapping with a ``plugin``) in a manifest's config, by dotted path."""
    if not isinstance(config, dict):
        return {}
    if "plugin" in config:
        return {path: config}
    return {k: v for key, sub in config.items() for k, v in _components(sub, f"{path}.{key}" if path else str(key)).items()}


def _without_versions(config: Any) -> Any:
    """``config`` with the installed versions of its components left out: the suite as written."""
    if not isinstance(config, dict):
        return config
    drop = {"version", "distribution"} if "plugin" in config else set()
    return {key: _without_versions(value) for key, value in config.items() if key not in drop}


def check_resume(store: RunStore, manifest: dict[str, Any], force: bool) -> None:
    """Refuse to mix results of two different suites, or of two versions of a plugin, in one run directory."""
    previous = store.read_manifest()
    if previous is None or force or set(previous["cells"]) == set(manifest["cells"]):
        return
    suite_changes = _differences(_without_versions(previous["config"]), _without_versions(manifest["config"]))
    old, new = _components(previous["config"]), _components(manifest["config"])
    installed = [
        f"plugin '{new[path]['plugin']}' ({path}) {old[path].get('version')} -> {new[path].get('version')}"
        for path in sorted(set(old) & set(new))
        if old[path].get("version") != new[path].get("version")
    ]
    if previous.get("benchsuite_version") != manifest["benchsuite_version"]:
        installed.append(f"benchsuite {previous.get('benchsuite_version')} -> {manifest['benchsuite_version']}")
    found = []
    if suite_changes:
        found.append(f"the suite changed: {_shown(suite_changes)}")
    if installed:
        found.append(f"the installed software changed: {_shown(installed)}")
    if suite_changes:
        advice = "Restore the suite, pass --out to start a new run directory, or pass --force to run the changed suite here"
    else:
        advice = "Pass --force to run the new version's cells here, or pass --out to start a new run directory"
    raise SuiteError(
        f"{store.run_dir} holds results of a different version of suite '{manifest['suite']}' "
        f"({'; '.join(found) or 'the cell keys differ'}). Resuming would mix results of two configurations in one cube. "
        f"{advice} (the old cells stay in parts/, untouched; the cube holds the new cells only)."
    )


def _shown(changes: list[str]) -> str:
    return ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")


def _stored(count: int) -> str:
    """What a failed run kept, as the closing sentence of its error."""
    if not count:
        return "No cell had finished, so nothing is stored."
    return f"{count} finished cell{'s are' if count > 1 else ' is'} stored; rerun the same command to resume."


def _explain(failure: CellFailure, run_dir: Path, stored: int) -> RunError:
    log = run_dir / "error.log"
    log.write_text("".join(traceback.format_exception(failure.cause)), encoding="utf-8")
    cause = failure.cause
    if isinstance(cause, NonFiniteLoss):
        detail = (f"{cause}. Lower the learning rate (methods.{failure.cell.method}.params.lr) "
                  "or check the dataset for NaN or huge pixel values.")  # fmt: skip
    elif isinstance(cause, BenchsuiteError):
        detail = sentence(str(cause))
    else:
        detail = f"{type(cause).__name__}: {cause} (a bug in that plugin or in benchsuite; traceback in {log})."
    return RunError(f"{failure.stage} failed for cell {failure.cell.describe()}: {detail} {_stored(stored)}")


def _explain_lost(lost: list[LostGroup], executor: str, run_dir: Path, stored: int) -> RunError:
    log = run_dir / "error.log"
    log.write_text("".join(f"{cell.describe()}: {group.cause}\n" for group in lost for cell in group.cells), encoding="utf-8")
    count = sum(len(group.cells) for group in lost)
    return RunError(
        f"{count} cell{'s' if count > 1 else ''} could not be run: the '{executor}' executor lost "
        f"{'them' if count > 1 else 'it'} ({lost[0].cause}; every cell and cause in {log}). "
        f"{_stored(stored)} A rerun runs the lost cells."
    )


class _NanTally:
    """Counts NaN per-image values over a run, to warn once per metric rather than once per cell."""

    def __init__(self) -> None:
        self.missing: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.identical_views = 0

    def add(self, result: CellResult) -> None:
        self.identical_views += result.identical_views
        for name, values in result.image_metrics.items():
            self.missing[name] = self.missing.get(name, 0) + int(np.isnan(values).sum())
            self.total[name] = self.total.get(name, 0) + values.size

    def warn(self) -> None:
        for name, missing in self.missing.items():
            if not missing:
                continue
            why = "empty masks or undefined maps"
            if self.identical_views:
                why = f"{self.identical_views} cells have identical views and so no saliency; any others: {why}"
            warnings.warn(
                f"{name}: {missing} of {self.total[name]} per-image values are NaN ({why})", MetricWarning, stacklevel=2
            )


class _PlaceholderTally:
    """Each method's cells that ended training with placeholder negatives, to warn once per run rather than once per cell."""

    def __init__(self) -> None:
        self.shares: dict[str, list[float]] = {}  # method label -> the share of each of its cells that stores negatives

    def add(self, result: CellResult) -> None:
        if result.placeholder_negatives is not None:
            self.shares.setdefault(result.cell.method, []).append(result.placeholder_negatives)

    def warn(self) -> None:
        found = []
        for method, shares in self.shares.items():
            unfilled = [share for share in shares if share > 0]
            if unfilled:
                spread = f"{min(unfilled):.0%} to {max(unfilled):.0%} of their negatives"
                found.append(f"{method}: {len(unfilled)} of {len(shares)} cells, {spread}")
        if not found:
            return
        warnings.warn(
            f"cells ended training with part of their negatives still placeholders, not keys of training images "
            f"({'; '.join(found)}; placeholder_negatives in the cube). Placeholders are easy negatives, so those cells' "
            "training loss (final_loss) is lower than with real keys, and the more so the fewer images x epochs a dataset "
            "gives: compare datasets on heldout_infonce, or have the method fill its negatives before the first step "
            "(moco_v2: queue_init: keys).",
            NegativesWarning,
            stacklevel=2,
        )


def run_cells(
    resolved: ResolvedSuite, registry: PluginRegistry, out_dir: Path, *, force: bool = False, progress: bool = True
) -> RunSummary:
    """Run every cell of ``resolved`` not yet stored under ``out_dir/<suite name>/`` and build the cube.

    The run holds the run directory's lock throughout (:class:`RunDirInUse` if another run does),
    converts the per-cell shards of an earlier version, sets damaged parts aside so their cells
    run again, and builds and checks every dataset of the cells to run before the first one
    trains. Each result is logged to TensorBoard as it arrives and stored with the others that
    arrive with it (:class:`PartWriter`); the cube is assembled from the parts on the
    way out, also when a cell fails or the run is interrupted. Cells build their components from
    ``registry``, the one that resolved the suite.
    """
    store = RunStore(Path(out_dir) / resolved.name)
    cells = expand(resolved)
    manifest = _manifest(resolved, cells)
    with store.locked():
        check_resume(store, manifest, force)
        detail = detail_thetas(resolved.suite.thetas, resolved.suite.record.detail_angles)
        converted = convert_shards(store, detail)
        if converted:
            warnings.warn(
                f"{store.run_dir} was written by an earlier version of benchsuite, one file per cell in cells/; its "
                f"{converted} stored cells were converted to parts/ (the layout this version reads), and cells/ removed.",
                StoreWarning,
                stacklevel=2,
            )
        for path, error in store.set_aside_unreadable():
            warnings.warn(
                f"a part of the stored results could not be read ({' '.join(error.split())}); moved to {path}, "
                "its cells run again.",
                StoreWarning,
                stacklevel=2,
            )
        done = store.done_keys()
        todo = [c for c in cells if force or c.key not in done]
        try:
            preflight(todo, registry, progress=progress)
        except CellFailure as failure:  # building a model failed: what the cell itself would have met
            raise _explain(failure, store.run_dir, len(done)) from None
        store.write_manifest(manifest, resolved.text)
        ran = _run(resolved, registry, store, cells, todo, detail, progress)
    return RunSummary(store.run_dir, store.cube_path, len(cells), ran, len(cells) - len(todo))


def _run(
    resolved: ResolvedSuite,
    registry: PluginRegistry,
    store: RunStore,
    cells: list[Cell],
    todo: list[Cell],
    detail: frozenset[float],
    progress: bool,
) -> int:
    """Run ``todo`` with the suite's executor, storing each result as it arrives; returns how many ran.

    ``detail`` holds the suite's detailed angles, whose cells are kept in full in the cube and the logs.
    """
    # When every cell runs (a new run, or --force), logs found in the run directory are stale.
    logs = RunLogs(store.run_dir / "tensorboard", cells, detail, replace=len(todo) == len(cells))
    executor_config = resolved.single("executors")
    executor = registry.get("executors", executor_config.plugin).factory(executor_config.params)
    task = GroupTask(registry, worker_environment(), str(store.run_dir), progress)

    ran, nans, placeholders, lost = 0, _NanTally(), _PlaceholderTally(), []
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=resolved.name, unit="cell", disable=not progress)
    try:
        with PartWriter(store, detail) as parts:
            for result in executor.run(task, families(todo)):
                if isinstance(result, LostGroup):
                    lost.append(result)  # the rest of the run goes on; reported below
                    continue
                # Logs first: a stored cell is done, so a stored cell always has its logs.
                logs.add(result)
                parts.add(result)
                nans.add(result)
                placeholders.add(result)
                ran += 1
                bar.update()
    except CellFailure as failure:
        raise _explain(failure, store.run_dir, len(store.done_keys())) from None
    finally:
        logs.close()
        bar.close()
        nans.warn()
        placeholders.warn()
        if store.done_keys() and not (ran == 0 and store.cube_is_current(cells, resolved.text)):
            sweep_paths = {sweep.dim: sweep.path for sweep in resolved.sweeps}
            store.write_cube(store.build_cube(cells, _cube_attrs(resolved), sweep_paths))
    if lost:
        raise _explain_lost(lost, executor_config.plugin, store.run_dir, len(store.done_keys()))
    return ran


def _cube_attrs(resolved: ResolvedSuite) -> dict[str, str]:
    components = [c for by_label in resolved.components.values() for c in by_label.values()]
    return {
        names.SUITE_NAME: resolved.name,
        names.SUITE_YAML: resolved.text,
        names.EXECUTOR: json.dumps(resolved.single("executors").config()),  # the last run's, which --executor may set
        names.SUITE_DESCRIPTION: resolved.suite.description,
        names.VERSIONS: json.dumps(provenance.versions({c.distribution for c in components})),
        names.PLUGINS: json.dumps({c.plugin: f"{c.distribution} {c.version}" for c in components}),
        names.DEVICE_DESCRIPTION: provenance.device_description(),
        names.GIT_REVISION: provenance.git_revision(),
        names.CREATED: utc_now(),
        names.ANALYSIS: json.dumps(resolved.suite.analysis.model_dump(mode="json")),
        names.OUTCOME: resolved.suite.outcome or "",
    }
