"""A group of cells start to finish: data, pre-training (alone or stacked), saliency, metrics.

:func:`run_group` is the one function that trains and scores cells: a group is one cell, or
several that differ only in theta and seed, pre-trained together as one stacked model. It needs
the cells (plain data), a device and the registry that resolved the suite. ``GroupTask`` is what
every executor calls: ``run_group`` with that registry (it pickles as the names of its entry
points, so a worker process or a cluster node rebuilds the same one from its installed plugins)
and the driver's data settings.
"""

from __future__ import annotations

import functools
import os
import resource
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchsuite.api import AnyAugmentation, MetricInputs, PluginError, SSPMethod, check_metric_output
from benchsuite.engine.building import CellData, CellFailure, build, build_method, in_stage, load_data
from benchsuite.engine.grid import Cell
from benchsuite.engine.orientation import orientation_histogram
from benchsuite.engine.registry import PluginRegistry
from benchsuite.engine.stacking import stacked_pair_similarity, train_stacked
from benchsuite.engine.training import StackedNonFiniteLoss, before_training, pretrain
from benchsuite.engine.views import FixedPair, draw_generator, fresh_pair
from benchsuite.results.cell_result import CellResult, TrainingCurves


@dataclass(frozen=True)
class PairSimilarity:
    """cos(f(v1), f(v2)) per row, (v1, v2) the cell's pair of the row: the pre-training objective that saliency explains.

    An :class:`api.Objective` whose ``model`` is the trained method. For ``rotation`` the pair is
    ``(x, R_theta x)``; a random augmentation applies the draw fixed for the row's image
    (``pair``, :class:`benchsuite.engine.views.FixedPair`). The gradient flows through the augmentation
    back to ``x``, so saliency lands in the coordinates of the unaugmented image and needs no
    rotating back (the original prototype scored a map that had not been rotated back).
    """

    model: SSPMethod
    pair: FixedPair

    def __call__(self, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        view1, view2 = self.pair(rows, index)
        return F.cosine_similarity(self.model.embed(view1), self.model.embed(view2), dim=1)


def peak_memory_mb(device: torch.device) -> float:
    """The CUDA peak allocation since the last reset, or the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux reports ru_maxrss in KiB; it is the process-wide peak, not this cell's alone.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StackingWarning(UserWarning):
    """A method could not be trained as a stacked model, so its cells ran one at a time."""


def _unstackable(error: Exception) -> bool:
    # What torch.func refuses (.item(), data-dependent shapes, random ops, unbatched buffers written
    # in place) surfaces as a RuntimeError that names vmap or batching; a plugin's own bug does not.
    message = str(error)
    return isinstance(error, RuntimeError) and ("vmap" in message or "batched" in message)


def _this_process() -> str:
    # The host too: a process on a cluster node can have the driver's pid.
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class GroupTask:
    """The task executors run (``api.CellTask``): :func:`run_group` with what the driver resolved.

    It pickles as the registry's plugin names and plain settings, so a worker process, a Ray
    node or a Slurm job rebuilds the same components and reads the same data: ``environment``
    (``data.worker_environment()``: data root, dataset cache) is applied in the worker before
    the group runs, and not in the driver, whose environment it was taken from (a run executed
    in-process would otherwise leave it changed for the rest of the process).
    """

    registry: PluginRegistry
    environment: dict[str, str]
    run_dir: str
    progress: bool = False  # epoch bars, drawn only in the driver's process: a worker's would interleave
    driver: str = field(default_factory=_this_process)

    def __call__(self, cells: Sequence[Cell], device: torch.device) -> list[CellResult]:
        in_driver = _this_process() == self.driver
        if not in_driver:  # the driver's environment is where these settings came from; it stays as it is
            os.environ.update(self.environment)
        return run_group(cells, device, registry=self.registry, progress=self.progress and in_driver)


def run_group(
    cells: Sequence[Cell],
    device: torch.device,
    *,
    registry: PluginRegistry,
    progress: bool = False,
    train_images: int | None = None,
) -> list[CellResult]:
    """Train and score cells that differ only in theta and seed: one alone, several as one stacked model.

    Each cell keeps its own weight initialisation, data order, optimiser state, buffers and
    theta (:func:`benchsuite.engine.stacking.train_stacked`), so its numbers are what it gets
    alone; a group that does not fit in memory is split in halves, and a method that cannot be
    stacked runs its cells one at a time. Saliency then runs for the whole group at once
    (:func:`saliency_maps`) and the metrics per cell. Each cell's ``wall_time_s`` is its share
    of the group's data, training and saliency plus its own metrics. ``train_images`` pre-trains
    on the first that many training images only (``benchsuite estimate`` times a few steps).
    """
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = cells[0]
    data = load_data(first, registry, device)
    methods = [build_method(cell, registry, data.train.shape[1], device) for cell in cells]
    augment = build(registry, first, "augmentations")
    trained = _pretrain(cells, methods, augment, data.train[:train_images], device, progress)
    if isinstance(trained, _Resplit):
        return [
            result
            for part in trained.parts
            for result in run_group(part, device, registry=registry, progress=progress, train_images=train_images)
        ]
    maps = saliency_maps(cells, methods, augment, data, registry)
    share = (time.perf_counter() - start) / len(cells)
    results = []
    for cell, method, curves, saliency in zip(cells, methods, trained, maps, strict=True):
        begun = time.perf_counter() - share
        results.append(evaluate(cell, registry, method, augment, curves, data, saliency, start=begun, stack_size=len(cells)))
    return results


@dataclass(frozen=True)
class _Resplit:
    """The group could not be trained as one stack: these parts of it run as groups of their own."""

    parts: list[list[Cell]]


def _pretrain(
    cells: Sequence[Cell],
    methods: list[SSPMethod],
    augment: AnyAugmentation,
    images: torch.Tensor,
    device: torch.device,
    progress: bool,
) -> list[TrainingCurves] | _Resplit:
    """Each cell's model trained on ``images``, alone or stacked; or the parts to run instead."""
    first = cells[0]
    stage = f"pre-training with '{first.component('ssp_methods').plugin}'"
    for cell, method in zip(cells, methods, strict=True):  # each model alone, as it would be trained alone
        with in_stage(cell, stage):
            before_training(method, augment, cell.theta, images, cell.seed)
    orders = [torch.Generator().manual_seed(cell.seed) for cell in cells]
    views = [draw_generator(cell.seed, "training", device) for cell in cells]
    if len(cells) == 1:
        with in_stage(first, stage):
            label = first.describe()
            return [pretrain(methods[0], augment, first.theta, images, orders[0], views=views[0], progress=progress, label=label)]
    try:
        return train_stacked(methods, augment, [cell.theta for cell in cells], images, orders, views=views)
    except StackedNonFiniteLoss as exc:
        raise CellFailure(cells[exc.model], stage, exc) from exc
    except torch.OutOfMemoryError as exc:
        # The executor sizes groups without knowing the model (stack: auto is 64 on a GPU); a
        # group that does not fit trains as two halves rather than failing the run.
        methods.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(cells) // 2
        warnings.warn(
            f"a stack of {len(cells)} cells did not fit in the memory of {device} ({str(exc).splitlines()[0]}); "
            f"training it as stacks of {half} and {len(cells) - half}. A smaller executor 'stack' avoids the retry.",
            StackingWarning,
            stacklevel=3,
        )
        return _Resplit([list(cells[:half]), list(cells[half:])])
    except Exception as exc:
        if not _unstackable(exc):
            raise CellFailure(first, f"{stage} (a stack of {len(cells)} cells)", exc) from exc
        reason = str(exc).splitlines()[0]
        warnings.warn(
            f"SSP method '{first.component('ssp_methods').plugin}' cannot be trained as a stack ({reason}); "
            f"its {len(cells)} cells run one at a time. docs/plugins.md says what makes a method stackable.",
            StackingWarning,
            stacklevel=3,
        )
        return _Resplit([[cell] for cell in cells])


@dataclass(frozen=True)
class CellSaliency:
    """A cell's saliency maps of its evaluation images, whether it has any, and how they were made."""

    maps: torch.Tensor  # [N, H, W]; all NaN when the views are identical
    identical_views: bool
    objective: PairSimilarity  # what the maps explain
    explain: Callable[[SSPMethod], torch.Tensor]  # the same saliency method, noise and draws, for another method


def _explainer(
    saliency_fn: Any, pair: FixedPair, images: torch.Tensor, seed: int, identical: bool
) -> Callable[[SSPMethod], torch.Tensor]:
    """``explain(other)``: the maps the cell's saliency method makes for ``other``'s pair objective, with the cell's noise."""

    def explain(other: SSPMethod) -> torch.Tensor:
        if identical:  # the objective is constant whatever the weights: no saliency, as for the cell itself
            return torch.full((len(images), *images.shape[-2:]), float("nan"), device=images.device)
        noise = torch.Generator(device=images.device).manual_seed(seed)
        return saliency_fn(PairSimilarity(other.eval(), pair), images, noise).detach()

    return explain


def saliency_maps(
    cells: Sequence[Cell], methods: Sequence[SSPMethod], augment: AnyAugmentation, data: CellData, registry: PluginRegistry
) -> list[CellSaliency]:
    """Saliency of each trained ``methods[k]`` for its cell's pair objective, on the evaluation images.

    The cells share everything but theta and seed. Their models are scored together through the
    saliency method's optional ``stacked`` (one pass per chunk for all of them) or, without it,
    one after another; either way a cell's maps are what it gets alone. Each cell draws its
    noise from a generator seeded by its own seed, and its augmentation's fixed draw per image
    (for a random augmentation) from another.
    """
    first = cells[0]
    images, device = data.eval_images, data.eval_images.device
    saliency_fn = build(registry, first, "saliency_methods")
    for method in methods:
        method.eval()
    stage = f"saliency method '{first.component('saliency_methods').plugin}'"
    if len(cells) > 1:
        stage += f" (a stack of {len(cells)} cells)"
    with in_stage(first, stage):
        # The one place that decides whether a cell has saliency at all: when the pair's views are
        # identical (theta = 0 for rotation), cos(f(x), f(x)) = 1 for every x and its gradient is
        # rounding noise, not saliency. NaN maps make every saliency metric NaN, not noise.
        pairs = [FixedPair(augment, images, cell.theta, draw_generator(cell.seed, "saliency", device)) for cell in cells]
        every_image = torch.arange(len(images), device=device)
        identical = [torch.equal(*pair(images, every_image)) for pair in pairs]
        scored = [k for k, same in enumerate(identical) if not same]
        noise = [torch.Generator(device=device).manual_seed(cells[k].seed) for k in scored]
        stacked = getattr(saliency_fn, "stacked", None)
        if len(scored) > 1 and stacked is not None:
            objective = stacked_pair_similarity([methods[k] for k in scored], [pairs[k] for k in scored])
            found = list(stacked(objective, images, noise).detach())
        else:
            found = [
                saliency_fn(PairSimilarity(methods[k], pairs[k]), images, g).detach() for k, g in zip(scored, noise, strict=True)
            ]
        shape = (len(images), *images.shape[-2:])
        nan_maps = torch.full(shape, float("nan"), device=device)
        maps = dict(zip(scored, found, strict=True))
        results = [
            CellSaliency(
                maps.get(k, nan_maps),
                same,
                PairSimilarity(methods[k], pairs[k]),
                _explainer(saliency_fn, pairs[k], images, cells[k].seed, same),
            )
            for k, same in enumerate(identical)
        ]
        for result in results:
            if result.maps.shape != shape:
                raise PluginError(f"returned maps of shape {tuple(result.maps.shape)}, expected {shape}")
    return results


def evaluate(
    cell: Cell,
    registry: PluginRegistry,
    method: SSPMethod,
    augment: AnyAugmentation,
    curves: TrainingCurves,
    data: CellData,
    cell_saliency: CellSaliency,
    *,
    start: float,
    stack_size: int,
) -> CellResult:
    """The metrics of a pre-trained cell with its saliency, and everything the store keeps of it."""
    eval_images, eval_masks = data.eval_images, data.eval_masks
    saliency, device = cell_saliency.maps, eval_images.device

    def inputs() -> MetricInputs:
        # Made anew for each metric: its augmentation draws start from the cell's seed whichever
        # other metrics the suite lists.
        views = draw_generator(cell.seed, "metrics", device)
        return MetricInputs(
            saliency=saliency,
            masks=eval_masks,
            images=eval_images,
            epoch_loss=torch.as_tensor(curves.epoch_loss, device=device),
            theta=cell.theta,
            train_images=data.train,
            embed=torch.no_grad()(method.embed),
            augment=functools.partial(fresh_pair, augment, theta=cell.theta, generator=views),
            seed=cell.seed,
            represent=torch.no_grad()(method.represent),
            train_masks=data.train_masks,
            encoder=getattr(method, "encoder", None),
            objective=cell_saliency.objective,
            explain=cell_saliency.explain,
        )

    image_metrics: dict[str, np.ndarray] = {}
    cell_metrics: dict[str, float] = {}
    higher_is_better: dict[str, bool] = {}
    for name, component in cell.components("metrics").items():
        metric = build(registry, cell, "metrics", component=component)
        with in_stage(cell, f"metric '{name}' ({component.plugin})"):
            values = check_metric_output(metric, metric(inputs()), len(eval_images)).detach().double().cpu()
            if metric.scope == "image":
                image_metrics[name] = values.numpy()
            else:
                cell_metrics[name] = float(values)
            if getattr(metric, "higher_is_better", None) is not None:
                higher_is_better[name] = metric.higher_is_better

    settings = cell.data
    examples = min(settings.examples, len(eval_images))
    if eval_masks is None:  # a dataset without masks has no outline to draw
        example_masks = np.zeros((examples, *eval_images.shape[-2:]), bool)
    else:
        example_masks = eval_masks[:examples].cpu().numpy()
    return CellResult(
        cell=cell,
        image_metrics=image_metrics,
        cell_metrics=cell_metrics,
        higher_is_better=higher_is_better,
        curves=curves,
        identical_views=cell_saliency.identical_views,
        example_saliency=saliency[:examples].float().cpu().numpy(),
        example_images=eval_images[:examples].float().cpu().numpy(),
        example_masks=example_masks,
        orientation_hist=orientation_histogram(data.images, settings.orientation_bins).numpy(),
        wall_time_s=time.perf_counter() - start,
        peak_memory_mb=peak_memory_mb(device),
        device=str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        threads=torch.get_num_threads(),
        stack_size=stack_size,
        placeholder_negatives=method.placeholder_negatives(),
    )
