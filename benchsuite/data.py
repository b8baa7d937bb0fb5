"""Datasets as tensors: built once by their plugin, cached on disk, split by a fixed seed."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchsuite.api import DataSpec, ImageMaskSet, PluginError
from benchsuite.errors import RunError
from benchsuite.registry import PluginRegistry
from benchsuite.suite import canonical_json


def cache_dir() -> Path:
    """Where built datasets are cached: ``$BENCHSUITE_CACHE`` or ``~/.cache/benchsuite``."""
    root = os.environ.get("BENCHSUITE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "benchsuite"
    return Path(root) / "datasets"


@dataclass(frozen=True)
class Split:
    """The fixed train/evaluation split of one dataset; the same for every cell."""

    train_images: Tensor
    eval_images: Tensor
    eval_masks: Tensor


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


def load_dataset(component: dict[str, Any], size: int, registry: PluginRegistry) -> ImageMaskSet:
    """The dataset a cell config names, from the cache when it was built before.

    The cache key covers the data root, since relative folders in a dataset's params resolve
    against it; the cell key does not, so the same data elsewhere gives the same cells.
    """
    root = str(data_root())
    key = hashlib.sha256(canonical_json({"dataset": component, "size": size, "data_root": root}).encode()).hexdigest()[:20]
    return _cached(key, canonical_json(component), size, root, registry)


@functools.lru_cache(maxsize=8)
def _cached(key: str, component_json: str, size: int, root: str, registry: PluginRegistry) -> ImageMaskSet:
    # Memoised per process as well: every cell of a dataset would otherwise re-read the file.
    path = cache_dir() / f"{key}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        return ImageMaskSet(stored["images"], stored["masks"])
    component = json.loads(component_json)
    plugin = registry.get("datasets", component["plugin"])
    params = registry.parse_params("datasets", component["plugin"], component["params"])
    spec = DataSpec(size=size, data_root=Path(root))
    data = _single_threaded(plugin.factory, params, spec)
    if not isinstance(data, ImageMaskSet):
        raise PluginError(f"{plugin.origin} returned {type(data).__name__}, not an ImageMaskSet")
    try:
        data.check_size(spec)
    except PluginError as exc:
        raise PluginError(f"{plugin.origin}: {exc}") from None
    # Cells see the data as the cache holds it, so the run that builds it and the runs that
    # read it back compute on the same float32 tensors.
    data = ImageMaskSet(data.images.float().contiguous(), data.masks.contiguous())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": data.images, "masks": data.masks}, tmp)
    os.replace(tmp, path)
    return data


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
        raise RunError(
            f"dataset '{label}' has {n} images, too few to hold out {eval_images} for evaluation and still "
            f"train on at least 2; lower data.eval_images in the suite or give the dataset more images."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    held, train = order[:eval_images].sort().values, order[eval_images:].sort().values
    return Split(data.images[train], data.images[held], data.masks[held])
