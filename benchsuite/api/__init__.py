"""The public surface of benchsuite: the only package a plugin imports, as ``from benchsuite.api import ...``.

A plugin is a module with functions marked ``@hookimpl`` (see ``benchsuite.engine.hookspecs`` for
the hooks). Each registration hook receives a :class:`Registry` and calls ``registry.add``
once per component it provides. The records and protocols re-exported here, one module per
contract, are what crosses the boundary between the core and a plugin; everything else in
``benchsuite`` is private (docs/design.md, module table).
"""

from benchsuite.api.augmentations import AnyAugmentation, Augmentation, Draw, RandomAugmentation
from benchsuite.api.datasets import DataSpec, ImageMaskSet
from benchsuite.api.errors import PluginError
from benchsuite.api.executors import CellTask, Count, Executor, ExecutorParams, LostGroup
from benchsuite.api.metrics import Metric, MetricInputs, check_metric_output
from benchsuite.api.params import Params, TrainingParams
from benchsuite.api.registration import (
    PROJECT,
    AugmentationFactory,
    DatasetFactory,
    EncoderFactory,
    ExecutorFactory,
    MetricFactory,
    Registry,
    SaliencyFactory,
    SSPMethodFactory,
    hookimpl,
)
from benchsuite.api.saliency import Objective, Saliency, StackedObjective
from benchsuite.api.ssp_methods import SSPMethod
from benchsuite.engine.executing import GPU_STACK, cut_groups, run_on_worker, stack_size

__all__ = [
    "GPU_STACK",
    "PROJECT",
    "AnyAugmentation",
    "Augmentation",
    "AugmentationFactory",
    "CellTask",
    "Count",
    "DataSpec",
    "DatasetFactory",
    "Draw",
    "EncoderFactory",
    "Executor",
    "ExecutorFactory",
    "ExecutorParams",
    "ImageMaskSet",
    "LostGroup",
    "Metric",
    "MetricFactory",
    "MetricInputs",
    "Objective",
    "Params",
    "PluginError",
    "RandomAugmentation",
    "Registry",
    "SSPMethod",
    "SSPMethodFactory",
    "Saliency",
    "SaliencyFactory",
    "StackedObjective",
    "TrainingParams",
    "check_metric_output",
    "cut_groups",
    "hookimpl",
    "run_on_worker",
    "stack_size",
]
