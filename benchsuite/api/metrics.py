"""The metric contract: what a metric reads for one cell and what it must return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor, nn

from benchsuite.api.errors import PluginError
from benchsuite.api.saliency import Objective
from benchsuite.api.ssp_methods import SSPMethod


@dataclass(frozen=True)
class MetricInputs:
    """Everything a metric may look at for one cell.

    Saliency, masks and images are the evaluation split. ``embed`` is the pre-trained method's
    frozen embedding (no gradient, eval mode) and ``augment`` makes the cell's pair ``(x, R_theta
    x)`` (through a random augmentation, a fresh draw from a generator seeded by the cell on each
    call), so probe metrics can train on ``train_images`` and test on ``images``; ``represent``
    is the frozen encoder's representation before any head (:meth:`SSPMethod.represent`).
    ``seed`` is the cell's seed, for any randomness a metric needs.

    ``objective`` is the function the maps explain (the pair similarity, with the cell's fixed
    draws; :class:`Objective`), for faithfulness metrics that perturb the images and score them
    again; ``explain(method)`` gives the maps the cell's saliency method (same noise, same
    draws) makes for another trained method of the same kind, for sanity checks such as
    model-parameter randomisation.

    ``train_masks`` are the masks of ``train_images``, for downstream tasks that fine-tune on
    labelled training images. ``encoder`` is the pre-trained encoder itself (the method's
    ``encoder`` attribute, in eval mode; ``None`` for a method that keeps none), whose optional
    ``feature_map(x)`` dense tasks decode: a metric that trains on it trains a deep copy
    (``copy.deepcopy``) and leaves it unchanged, since later metrics read it too.

    Every tensor, the encoder's weights, and what ``embed`` and ``augment`` take and return, are
    on the device the cell runs on.
    """

    saliency: Tensor  # [N, H, W], non-negative; all NaN where undefined (identical views, theta = 0)
    masks: Tensor | None  # bool [N, H, W]; None for a dataset without masks, which only metrics that read none see
    images: Tensor  # [N, C, H, W]
    epoch_loss: Tensor  # [epochs], mean SSP loss per epoch
    theta: float
    train_images: Tensor  # [M, C, H, W]
    embed: Callable[[Tensor], Tensor]
    augment: Callable[[Tensor], tuple[Tensor, Tensor]]
    seed: int
    represent: Callable[[Tensor], Tensor]
    train_masks: Tensor | None  # bool [M, H, W], the masks of train_images; None as masks is
    encoder: nn.Module | None  # the pre-trained encoder, eval mode; None when the method keeps no `encoder`
    objective: Objective  # the explained objective of the evaluation images: objective(rows, index) -> [R]
    explain: Callable[[SSPMethod], Tensor]  # maps [N, H, W] of the evaluation images for another trained method


@runtime_checkable
class Metric(Protocol):
    """A metric computed per image (``scope="image"``, returns [N]) or per cell (returns a scalar).

    An image metric follows two NaN rules: an image with an undefined (NaN) map gets NaN, and so
    does one with an empty mask. A metric that does not score the maps sets ``reads_saliency =
    False`` (a downstream segmentation, say) and one that does not read the masks sets
    ``reads_masks = False`` (an embedding norm sets both); the rule is then not its to follow.
    Without the attributes a metric is taken to read both. Only a metric that reads no masks
    scores a dataset without them: the core refuses the others before any cell trains.

    A metric may also say which way is better: ``higher_is_better = True`` (Dice),
    ``False`` (a deletion AUC), or ``None``, the default, when neither is (an embedding norm).
    The cube records it, and ``benchsuite compare`` and the report then say "better" or "worse"
    rather than only "larger" or "smaller".
    """

    scope: Literal["image", "cell"]

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return the values. Images where the metric is undefined (e.g. empty mask) get NaN."""


def check_metric_output(metric: Metric, values: object, n_images: int) -> Tensor:
    """The metric output contract; returns ``values`` or raises :class:`PluginError` naming the broken rule.

    ``scope`` is ``"image"`` or ``"cell"``; ``higher_is_better``, if set, is True, False or None;
    the values are a floating-point tensor of shape ``[n_images]`` for an image metric and
    ``[]`` for a cell metric.
    """
    scope = getattr(metric, "scope", None)
    if scope not in ("image", "cell"):
        raise PluginError(f"has scope {scope!r}, not 'image' or 'cell'")
    direction = getattr(metric, "higher_is_better", None)
    if not isinstance(direction, bool | None):
        raise PluginError(f"has higher_is_better {direction!r}, not True, False or None")
    if not (isinstance(values, Tensor) and values.is_floating_point()):
        raise PluginError(f"returned {type(values).__name__} {getattr(values, 'dtype', '')}, not a floating-point tensor")
    expected = (n_images,) if scope == "image" else ()
    if tuple(values.shape) != expected:
        raise PluginError(f"returned shape {tuple(values.shape)} for scope '{scope}', expected {expected}")
    return values
