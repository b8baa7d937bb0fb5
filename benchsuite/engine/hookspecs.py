"""Every hook a benchsuite plugin can implement. Read this file to learn the extension surface.

Plugins are modules named by entry points in the ``benchsuite`` group::

    [project.entry-points.benchsuite]
    my_plugin = "my_package.plugin"

The core imports each entry point, then calls every registration hook once, with keyword
arguments; an implementation may accept fewer arguments than its spec. Each hook receives a
:class:`benchsuite.api.Registry` for one plugin kind, typed by that kind's factory, and calls
``registry.add(name, factory, params=Model, description=...)`` for each component it provides.
A name another distribution registers too is reached as ``distribution:name`` (benchsuite's own
components keep their bare names). Factories are called only when a suite uses the component,
with a validated instance of ``Model`` as the first argument and the kind's extra arguments below.
"""

from __future__ import annotations

import pluggy

from benchsuite.api import (
    PROJECT,
    AugmentationFactory,
    DatasetFactory,
    EncoderFactory,
    ExecutorFactory,
    MetricFactory,
    Registry,
    SaliencyFactory,
    SSPMethodFactory,
)

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    """Register datasets of images with binary foreground masks.

    Factory: ``factory(params, spec: DataSpec) -> ImageMaskSet``. It returns every image at
    ``spec.size`` x ``spec.size``; the core caches the result on disk, keyed by the plugin,
    its version and its parameters, and draws the train/evaluation split itself. Raise
    :class:`benchsuite.api.PluginError` with a helpful message for missing or bad data.
    """


@hookspec
def benchsuite_register_augmentations(registry: Registry[AugmentationFactory]) -> None:
    """Register pair augmentations that make the two views of the positive pair.

    Factory: ``factory(params) -> Augmentation``, called as ``aug(x, theta)`` on a batch that
    is already on the device, returning ``(view1, view2)``, or ``-> RandomAugmentation``, which
    draws its parameters first (``aug.draw``) and is called as ``aug(x, theta, draw)``. Either
    must be differentiable in ``x``.
    """


@hookspec
def benchsuite_register_ssp_methods(registry: Registry[SSPMethodFactory]) -> None:
    """Register self-supervised pre-training methods.

    Factory: ``factory(params, encoder: torch.nn.Module) -> SSPMethod``. ``params`` must be a
    :class:`benchsuite.api.TrainingParams` subclass; the core's loop reads epochs, batch size
    and the optimiser settings from it. ``encoder`` has an ``out_dim`` attribute.
    """


@hookspec
def benchsuite_register_encoders(registry: Registry[EncoderFactory]) -> None:
    """Register encoder backbones.

    Factory: ``factory(params, in_channels: int, image_size: int) -> torch.nn.Module`` mapping
    [N, C, H, W] to features [N, out_dim], with the feature size in an ``out_dim`` attribute.
    ``image_size`` is the side of the suite's square images (``data.size``), for models built
    for one input size (a ViT's patch grid); a model that takes any size ignores it.
    """


@hookspec
def benchsuite_register_saliency_methods(registry: Registry[SaliencyFactory]) -> None:
    """Register saliency (attribution) methods.

    Factory: ``factory(params) -> Saliency``, called as ``saliency(objective, x, generator)``
    where ``objective`` maps a batch to one score per image. It returns maps [N, H, W].
    """


@hookspec
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register metrics that score a cell.

    Factory: ``factory(params) -> Metric``; the metric's ``scope`` is ``"image"`` (it returns
    one value per evaluation image) or ``"cell"`` (one scalar). Inputs are a
    :class:`benchsuite.api.MetricInputs`. Undefined values are NaN, never a silent 0 or 1.
    """


@hookspec
def benchsuite_register_executors(registry: Registry[ExecutorFactory]) -> None:
    """Register executors that decide where cells run.

    Factory: ``factory(params) -> Executor``; ``executor.run(task, families)`` cuts each family
    (cells that differ only in theta and seed) into groups, calls ``task(group, device)`` for
    each, and yields the cells' results as they finish. Only the core writes results, so an
    executor needs no access to the run directory.
    """
