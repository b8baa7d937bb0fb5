"""How a plugin registers its components: ``@hookimpl`` marks its hooks, each of which receives a :class:`Registry`.

A hook's registry is typed by its kind's factory (``Registry[DatasetFactory]``, ...), so a type
checker tells a plugin author that a factory takes the wrong arguments or returns the wrong thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pluggy
from torch import nn

from benchsuite.api.augmentations import AnyAugmentation
from benchsuite.api.datasets import DataSpec, ImageMaskSet
from benchsuite.api.executors import Executor
from benchsuite.api.metrics import Metric
from benchsuite.api.params import Params
from benchsuite.api.saliency import Saliency
from benchsuite.api.ssp_methods import SSPMethod

PROJECT = "benchsuite"
hookimpl = pluggy.HookimplMarker(PROJECT)

# Each kind's factory. Its first argument is a validated instance of the component's own params
# model, hence Any here; the rest are what the core passes for that kind (benchsuite.engine.hookspecs).
DatasetFactory = Callable[[Any, DataSpec], ImageMaskSet]
AugmentationFactory = Callable[[Any], AnyAugmentation]
SSPMethodFactory = Callable[[Any, nn.Module], SSPMethod]  # the encoder it trains
EncoderFactory = Callable[[Any, int, int], nn.Module]  # the dataset's channel count, the images' side in pixels
SaliencyFactory = Callable[[Any], Saliency]
MetricFactory = Callable[[Any], Metric]
ExecutorFactory = Callable[[Any], Executor]

Factory = TypeVar("Factory", bound=Callable[..., Any], contravariant=True)


class Registry(Protocol[Factory]):
    """What a registration hook receives: one registry per plugin kind, typed by the kind's factory."""

    def add(
        self,
        name: str,
        factory: Factory,
        *,
        params: type[Params] = Params,
        description: str = "",
    ) -> None:
        """Register ``factory`` under ``name``.

        ``params`` is the pydantic model that validates the component's ``params:`` mapping
        in a suite; the factory receives an instance of it as its first argument.
        ``description`` is one line shown by ``benchsuite plugins``.
        """
