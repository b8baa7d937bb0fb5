"""A cell's data and components, each built inside its stage, so that a failure names whom to blame."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from benchsuite.api import SSPMethod
from benchsuite.engine.data import load_dataset, split
from benchsuite.engine.grid import Cell, Component
from benchsuite.engine.kinds import BY_NAME
from benchsuite.engine.registry import PluginRegistry


class CellFailure(Exception):
    """A stage of a cell failed; ``stage`` names the component so the user knows whom to blame."""

    def __init__(self, cell: Cell, stage: str, cause: BaseException):
        self.cell, self.stage, self.cause = cell, stage, cause
        super().__init__(f"{stage} failed for cell {cell.describe()}: {type(cause).__name__}: {cause}")

    def __reduce__(self) -> tuple[Any, ...]:  # so a failure in a worker process reaches the runner intact
        return (type(self), (self.cell, self.stage, self.cause))


@contextlib.contextmanager
def in_stage(cell: Cell, stage: str) -> Iterator[None]:
    """Run the block as ``stage`` of ``cell``: what it raises becomes a :class:`CellFailure` that names both."""
    try:
        yield
    except CellFailure:
        raise
    except Exception as exc:
        raise CellFailure(cell, stage, exc) from exc


def build(registry: PluginRegistry, cell: Cell, kind: str, *args: Any, component: Component | None = None) -> Any:
    """The component of ``kind`` that the cell names (or ``component``, one of a list kind's), built inside its stage."""
    component = component or cell.component(kind)
    with in_stage(cell, f"{BY_NAME[kind].label} '{component.plugin}'"):
        found = registry.get(kind, component.plugin)
        return found.factory(registry.parse_params(kind, component.plugin, component.params), *args)


@dataclass(frozen=True)
class CellData:
    """A cell's dataset and its fixed split, on the device."""

    images: torch.Tensor  # every image of the dataset (CPU), for the orientation histogram
    train: torch.Tensor
    eval_images: torch.Tensor
    eval_masks: torch.Tensor | None  # None, as train_masks, for a dataset without masks
    train_masks: torch.Tensor | None  # the masks of ``train``, for downstream metrics that fine-tune on labelled images


def load_data(cell: Cell, registry: PluginRegistry, device: torch.device) -> CellData:
    """The cell's dataset (from the cache when it was built before) and its fixed split, on ``device``."""
    dataset, settings = cell.component("datasets"), cell.data
    with in_stage(cell, f"dataset '{dataset.plugin}'"):
        data = load_dataset(dataset, settings.size, registry)
        parts = split(data, settings.eval_images, settings.split_seed, cell.dataset)
    return CellData(
        data.images,
        parts.train_images.to(device),
        parts.eval_images.to(device),
        None if parts.eval_masks is None else parts.eval_masks.to(device),
        None if parts.train_masks is None else parts.train_masks.to(device),
    )


def build_method(cell: Cell, registry: PluginRegistry, in_channels: int, device: torch.device) -> SSPMethod:
    """The cell's encoder inside its SSP method, initialised from the cell's seed, on ``device``."""
    torch.manual_seed(cell.seed)  # weight initialisation of the plugins' modules
    encoder = build(registry, cell, "encoders", in_channels, cell.data.size)
    return build(registry, cell, "ssp_methods", encoder).to(device)
