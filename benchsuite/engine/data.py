"""Datasets as tensors: built once by their plugin, cached on disk, checked, split by a fixed seed."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchsuite.api import DataSpec, ImageMaskSet, PluginError
from benchsuite.engine import cache
from benchsuite.engine.grid import Cell, Component, canonical_json
from benchsuite.engine.registry import PluginRegistry
from benchsuite.results.errors import DataError, SuiteError, sentence


@dataclass(frozen=True)
class Split:
    """The fixed train/evaluation split of one dataset; the same for every cell."""

    train_images: Tensor
    train_masks: Tensor | None  # None, as eval_masks, for a dataset without masks
    eval_images: Tensor
    eval_masks: Tensor | None


def set_data_root(folder: str | Path) -> None:
    """Make ``folder`` the data root of this process and of the worker processes it starts."""
    # Through the environment, so worker processes and plugins see the same root.
    os.environ["BENCHSUITE_DATA_ROOT"] = str(Path(folder).expanduser().resolve())


def worker_environment() -> dict[str, str]:
    """The settings a worker process needs to read the data this process reads: the data root, resolved
    here (a worker elsewhere has another working directory), and the dataset cache if one was set."""
    environment = {"BENCHSUITE_DATA_ROOT": str(data_root())}
    if os.environ.get("BENCHSUITE_CACHE"):
        environment["BENCHSUITE_CACHE"] = os.environ["BENCHSUITE_CACHE"]
    return environment


def data_root() -> Path:
    """Where datasets live on disk: ``$BENCHSUITE_DATA_ROOT`` (set by ``--data-root``), else the working directory."""
    return Path(os.environ.get("BENCHSUITE_DATA_ROOT") or Path.cwd()).expanduser().resolve()


def load_dataset(component: Component, size: int, registry: PluginRegistry) -> ImageMaskSet:
    """The dataset ``component`` (a cell's) at ``size`` px, from the cache when nothing its build read has changed since.

    The cache key covers the data root, since relative folders in a dataset's params resolve
    against it; the cell key does not, so the same data elsewhere gives the same cells.
    """
    root = str(data_root())
    key = hashlib.sha256(canonical_json({"dataset": component.config, "size": size, "data_root": root}).encode()).hexdigest()[:20]
    return _cached(key, canonical_json(component.config), size, root, registry)


@functools.lru_cache(maxsize=8)
def _cached(key: str, component_json: str, size: int, root: str, registry: PluginRegistry) -> ImageMaskSet:
    # Memoised per process as well: every cell of a dataset would otherwise re-read the file.
    component = json.loads(component_json)
    plugin = registry.get("datasets", component["plugin"])
    found = cache.entry(key)
    if found is not None and found.stale_because(cache.source_hash(plugin.factory)) is None:
        data = cache.read(found)
        if data is not None:
            return data
    params = registry.parse_params("datasets", component["plugin"], component["params"])
    spec = DataSpec(size=size, data_root=Path(root))

    def make() -> ImageMaskSet:
        data = _single_threaded(plugin.factory, params, spec)
        if not isinstance(data, ImageMaskSet):
            raise PluginError(f"{plugin.origin} returned {type(data).__name__}, not an ImageMaskSet.")
        try:
            data.check_size(spec)
        except PluginError as exc:
            raise PluginError(f"{plugin.origin}: {exc}") from None
        # Cells see the data as the cache holds it, so the run that builds it and the runs that
        # read it back compute on the same float32 tensors.
        return ImageMaskSet(data.images.float().contiguous(), None if data.masks is None else data.masks.contiguous())

    meta = {"dataset": component, "size": size, "data_root": root, "origin": plugin.origin}
    return cache.build(key, make, plugin.factory, meta)


def _single_threaded(build: Callable[..., ImageMaskSet], *args: Any) -> ImageMaskSet:
    # The cache keeps whatever the first build produced, and float reductions differ in their
    # last bits with the thread count: pinning it makes the cached data the same on every run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(*args)
    finally:
        torch.set_num_threads(threads)


def split(data: ImageMaskSet, eval_images: int, split_seed: int, label: str) -> Split:
    """Hold out ``eval_images`` images, drawn by ``split_seed``; the rest are for pre-training."""
    n = len(data)
    if n < eval_images + 2:
        raise SuiteError(
            f"the suite asks for data.eval_images = {eval_images}, but dataset '{label}' has {n} images: too few "
            f"to hold out {eval_images} for evaluation and still pre-train on at least 2. Lower data.eval_images "
            f"to at most {max(n - 2, 0)}, or give the dataset more images."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    held, train = order[:eval_images].sort().values, order[eval_images:].sort().values
    train_masks, eval_masks = (None, None) if data.masks is None else (data.masks[train], data.masks[held])
    return Split(data.images[train], train_masks, data.images[held], eval_masks)


class DataWarning(UserWarning):
    """A dataset can serve the study, but part of it cannot be scored (some evaluation masks are empty)."""


@dataclass(frozen=True)
class DatasetSummary:
    """What ``benchsuite validate --data`` prints of one dataset of a suite, and what the other pre-run checks read of it."""

    label: str
    key: str  # :func:`dataset_key` of its cells
    plugin: str
    images: int
    train: int
    eval: int
    shape: tuple[int, int, int]  # channels, height, width
    low: float
    high: float
    coverage: float | None  # share of foreground pixels over every mask; these three are None without masks
    empty_masks: int | None
    empty_eval_masks: int | None

    @property
    def has_masks(self) -> bool:
        return self.coverage is not None


def dataset_key(cell: Cell) -> str:
    """What tells the datasets of cells apart: the label and the configuration (with a swept parameter's value)."""
    return canonical_json([cell.dataset, cell.component("datasets").config])


def check_datasets(cells: Sequence[Cell], registry: PluginRegistry, *, progress: bool = False) -> list[DatasetSummary]:
    """Build (or read from the cache) every dataset ``cells`` use and check that it can serve the study.

    Run before any cell trains, so a broken dataset is bad input (exit code 2) rather than a run
    that fails part-way. Raises :class:`DataError` naming every dataset that cannot be built or
    whose every evaluation mask is empty, :class:`SuiteError` when ``data.eval_images`` exceeds it,
    and warns (:class:`DataWarning`) when some evaluation masks are empty.
    """
    # One check per dataset the cells build: a label, or a label per value of a swept dataset parameter.
    built = {dataset_key(c): c for c in reversed(cells)}
    firsts = [c for c in cells if built[dataset_key(c)] is c]
    summaries, failures = [], []
    for cell in tqdm(firsts, desc="datasets", unit="dataset", disable=not progress):
        dataset, settings = cell.component("datasets"), cell.data
        label = _dataset_label(cell, [c.component("datasets").params for c in firsts if c.dataset == cell.dataset])
        plugin = dataset.plugin
        try:
            data = load_dataset(dataset, settings.size, registry)
        except PluginError as exc:  # the others are still checked, so that one run of validate finds every failure
            failures.append(f"dataset '{label}' (plugin '{plugin}') cannot be built: {sentence(str(exc))}")
            continue
        parts = split(data, settings.eval_images, settings.split_seed, label)
        # A dataset without masks has none to check; preflight.check_masks keeps the metrics that read them away.
        coverage = empty_masks = empty_eval = None
        if data.masks is not None and parts.eval_masks is not None:
            empty = ~data.masks.flatten(1).any(dim=1)
            empty_eval = int((~parts.eval_masks.flatten(1).any(dim=1)).sum())
            if empty_eval == len(parts.eval_masks):
                failures.append(
                    f"dataset '{label}' (plugin '{plugin}'): every one of its {empty_eval} evaluation masks is empty, so "
                    f"no saliency metric could be computed. Check the masks (their folder, and the threshold that makes "
                    f"them foreground); {int(empty.sum())} of its {len(data)} masks are empty in all."
                )
                continue
            if empty_eval:
                warnings.warn(
                    f"dataset '{label}': {empty_eval} of its {len(parts.eval_masks)} evaluation masks are empty; their "
                    f"saliency metrics are NaN and leave the analysis.",
                    DataWarning,
                    stacklevel=2,
                )
            coverage, empty_masks = float(data.masks.float().mean()), int(empty.sum())
        summaries.append(
            DatasetSummary(
                label=label,
                key=dataset_key(cell),
                plugin=plugin,
                images=len(data),
                train=len(parts.train_images),
                eval=len(parts.eval_images),
                shape=tuple(data.images.shape[1:]),
                low=float(data.images.min()),
                high=float(data.images.max()),
                coverage=coverage,
                empty_masks=empty_masks,
                empty_eval_masks=empty_eval,
            )
        )
    if failures:
        count = f"{len(failures)} of the {len(firsts)} datasets cannot serve the study: " if len(failures) > 1 else ""
        raise DataError(count + " ".join(failures))
    return summaries


def _dataset_label(cell: Cell, variants: list[dict[str, Any]]) -> str:
    """The cell's dataset label, followed by the params in which the label's variants differ (a swept one)."""
    differing = [k for k in variants[0] if len({json.dumps(v.get(k)) for v in variants}) > 1]
    params = cell.component("datasets").params
    return " ".join([cell.dataset, *(f"{k}={params[k]}" for k in differing)])


def format_datasets(summaries: Sequence[DatasetSummary]) -> str:
    """The summaries as a table, one dataset per row."""
    header = ("dataset", "plugin", "images", "train", "eval", "C x H x W", "range", "foreground", "empty masks (eval)")
    rows = [
        (
            s.label,
            s.plugin,
            str(s.images),
            str(s.train),
            str(s.eval),
            " x ".join(map(str, s.shape)),
            f"[{s.low:.3g}, {s.high:.3g}]",
            "no masks" if s.coverage is None else f"{100 * s.coverage:.1f}%",
            "-" if s.empty_masks is None else f"{s.empty_masks} ({s.empty_eval_masks})",
        )
        for s in summaries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows])
