"""Saliency-vs-mask metrics per image: how well a saliency map finds the mask.

Every image metric is vectorised over the batch and returns one value per image in the
saliency map's floating dtype (at least float32), on its device. Where a metric is undefined
for an image (an empty mask, for instance) the value is NaN, never a silent 0 or 1: the core
counts NaNs and warns.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry

# skimage.filters.threshold_otsu's default, so thresholds can be checked against it.
_OTSU_BINS = 256


def _flat_maps_and_masks(inputs: MetricInputs) -> tuple[Tensor, Tensor, Tensor]:
    """Saliency [N, P] in the output dtype, masks bool [N, P], and which maps are undefined [N].

    A map is undefined when it holds NaN (the core passes NaN maps where the saliency objective
    is constant, e.g. at theta = 0); its NaNs are zeroed so the vectorised code stays finite,
    and every metric reports NaN for that image.
    """
    saliency, masks = inputs.saliency, inputs.masks
    if saliency.ndim != 3 or saliency.shape != masks.shape:
        raise ValueError(
            f"saliency [N, H, W] and masks [N, H, W] must have the same shape, "
            f"got {tuple(saliency.shape)} and {tuple(masks.shape)}"
        )
    dtype = torch.promote_types(saliency.dtype, torch.float32)
    flat = saliency.flatten(1).to(dtype)
    undefined = flat.isnan().any(dim=1)
    return flat.nan_to_num(nan=0.0).contiguous(), masks.flatten(1).bool(), undefined


class DiceParams(Params):
    """How the saliency map is binarised before Dice."""

    binarize: Literal["topk", "otsu", "percentile"] = Field(
        "topk",
        description="'topk': the k most salient pixels with k = mask size (ties go to the earlier pixel in "
        "row-major order); 'otsu': pixels above the image's Otsu threshold (256-bin histogram); "
        "'percentile': pixels above the image's given percentile.",
    )
    percentile: float = Field(
        90.0, gt=0, lt=100, description="Percentile of each map used as the threshold when binarize='percentile'."
    )


class Dice:
    """Dice 2|S ∩ M| / (|S| + |M|) of the binarised saliency map S and the mask M; NaN for an empty mask."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = True

    def __init__(self, params: DiceParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return Dice per image [N]."""
        saliency, masks, undefined = _flat_maps_and_masks(inputs)
        mask_size = masks.sum(dim=1)
        if self.params.binarize == "topk":
            salient = top_k_pixels(saliency, mask_size)
        elif self.params.binarize == "otsu":
            salient = saliency > otsu_threshold(saliency).unsqueeze(1)
        else:
            salient = saliency > _percentile(saliency, self.params.percentile).unsqueeze(1)
        return hard_dice(salient, masks).to(saliency.dtype).masked_fill(undefined, float("nan"))


def hard_dice(predicted: Tensor, masks: Tensor) -> Tensor:
    """Dice 2|P ∩ T| / (|P| + |T|) of boolean predictions and masks [N, ...] per image, float64; NaN where T is empty."""
    p, t = predicted.flatten(1), masks.flatten(1)
    overlap = (p & t).sum(dim=1).to(torch.float64)
    total = (p.sum(dim=1) + t.sum(dim=1)).to(torch.float64)
    return torch.where(t.any(dim=1), 2 * overlap / total.clamp(min=1), torch.nan)


def salience_rank(saliency: Tensor) -> Tensor:
    """Each pixel's place 0..P-1 in each row of ``saliency`` [N, P] from the most salient down; long [N, P].

    Ties are broken by position: among equal values the lower index comes first, so the order is
    deterministic.
    """
    order = torch.sort(saliency, dim=1, descending=True, stable=True).indices
    positions = torch.arange(saliency.shape[1], device=saliency.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def top_k_pixels(saliency: Tensor, k: Tensor) -> Tensor:
    """Mark the ``k[i]`` highest values of each row of ``saliency`` [N, P] (ties by position); returns bool [N, P]."""
    return salience_rank(saliency) < k.unsqueeze(1)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..P of each row of ``values`` [N, P], float64, ties given the mean of the ranks they span (scipy's 'average')."""
    ordered = values.sort(dim=1).values
    first = torch.searchsorted(ordered, values.contiguous(), right=False) + 1
    last = torch.searchsorted(ordered, values.contiguous(), right=True)
    # Rank sums reach ~P^2/2; float64 keeps them exact for any image size we use.
    return (first + last).to(torch.float64) / 2


def otsu_threshold(values: Tensor, bins: int = _OTSU_BINS) -> Tensor:
    """Otsu's threshold of each row of ``values`` [N, P], from a ``bins``-bin histogram; returns [N].

    Follows ``skimage.filters.threshold_otsu``: the histogram spans each row's [min, max], the
    threshold is the centre of the bin that maximises the between-class variance (the first such
    bin on ties), and the foreground is ``values > threshold``. A constant row gets its value.
    """
    low, high = values.aminmax(dim=1)
    width = (high - low) / bins
    # A constant row has zero width; every value then falls in bin 0.
    scaled = (values - low.unsqueeze(1)) / torch.where(width > 0, width, 1.0).unsqueeze(1)
    index = scaled.floor().long().clamp(0, bins - 1)
    counts = torch.zeros(values.shape[0], bins, dtype=values.dtype, device=values.device)
    counts.scatter_add_(1, index, torch.ones_like(values))
    centres = low.unsqueeze(1) + width.unsqueeze(1) * (torch.arange(bins, device=values.device) + 0.5)
    weight_below = counts.cumsum(dim=1)
    weight_above = counts.flip(1).cumsum(dim=1).flip(1)
    mass = counts * centres
    mean_below = mass.cumsum(dim=1) / weight_below
    mean_above = mass.flip(1).cumsum(dim=1).flip(1) / weight_above
    # Split after bin i: class 0 is bins <= i, class 1 is bins > i. Empty classes give NaN, which
    # nan_to_num turns into a variance of 0 so they are never chosen over a real split.
    between = weight_below[:, :-1] * weight_above[:, 1:] * (mean_below[:, :-1] - mean_above[:, 1:]) ** 2
    best = between.nan_to_num(nan=-1.0).argmax(dim=1, keepdim=True)
    return centres.gather(1, best).squeeze(1)


def _percentile(values: Tensor, q: float) -> Tensor:
    """The ``q``-th percentile of each row of ``values`` [N, P], interpolated linearly as numpy does."""
    # torch.quantile refuses inputs above 16M elements; a sort has no such limit.
    ordered = values.sort(dim=1).values
    position = q / 100 * (values.shape[1] - 1)
    below = math.floor(position)
    above = min(below + 1, values.shape[1] - 1)
    return ordered[:, below] + (ordered[:, above] - ordered[:, below]) * (position - below)


class Auroc:
    """Per-image AUROC of saliency scores against mask labels (Mann-Whitney U, ties averaged).

    NaN when the mask is empty or covers the whole image, where AUROC is undefined.
    """

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = True

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return AUROC per image [N]."""
        saliency, masks, no_map = _flat_maps_and_masks(inputs)
        rank = average_ranks(saliency)
        positives = masks.sum(dim=1).to(torch.float64)
        negatives = masks.shape[1] - positives
        u = (rank * masks).sum(dim=1) - positives * (positives + 1) / 2
        auroc = u / (positives * negatives)
        undefined = (positives == 0) | (negatives == 0) | no_map
        return auroc.masked_fill(undefined, float("nan")).to(saliency.dtype)


class MassInMask:
    """Fraction of saliency mass inside the mask, sum(S·M) / sum(S); NaN for an empty mask or map."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = True

    def __init__(self, params: Params) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        """Return the fraction per image [N]."""
        saliency, masks, no_map = _flat_maps_and_masks(inputs)
        total = saliency.sum(dim=1)
        inside = (saliency * masks).sum(dim=1)
        undefined = (masks.sum(dim=1) == 0) | (total == 0) | no_map
        return (inside / total).masked_fill(undefined, float("nan"))


class PointingGameParams(Params):
    """Parameters of ``pointing_game``."""

    weighted: bool = Field(
        False, description="Quantus's 'weighted': a hit scores 1 - mask share of the image, so hits on large masks count less."
    )


class PointingGame:
    """1 if a pixel of the map's maximum lies in the mask, else 0 (Zhang et al. 2018; Quantus's PointingGame); per image."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = True

    def __init__(self, params: PointingGameParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        saliency, masks, no_map = _flat_maps_and_masks(inputs)
        peak = saliency == saliency.amax(dim=1, keepdim=True)  # every pixel at the maximum, as Quantus
        hit = (peak & masks).any(dim=1).to(saliency.dtype)
        mask_size = masks.sum(dim=1)
        if self.params.weighted:
            hit = hit * (1 - mask_size.to(saliency.dtype) / masks.shape[1])
        return hit.masked_fill((mask_size == 0) | no_map, float("nan"))


class TopKParams(Params):
    """Parameters of ``top_k_intersection``."""

    fraction: float = Field(0.1, gt=0, le=1, description="k as a share of the image's pixels (Quantus's k = fraction * H * W).")
    concept_influence: bool = Field(
        False, description="Quantus's 'concept_influence': divide by the mask's share of the image, so 1 is chance."
    )


class TopKIntersection:
    """Share of the k most salient pixels that lie in the mask (Theiner et al. 2021; Quantus's TopKIntersection); per image."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = True

    def __init__(self, params: TopKParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        saliency, masks, no_map = _flat_maps_and_masks(inputs)
        pixels = masks.shape[1]
        k = max(1, round(self.params.fraction * pixels))
        top = top_k_pixels(saliency, torch.full((len(saliency),), k, device=saliency.device))
        share = (top & masks).sum(dim=1).to(saliency.dtype) / k
        mask_size = masks.sum(dim=1)
        if self.params.concept_influence:
            share = share * pixels / mask_size.clamp(min=1).to(saliency.dtype)
        return share.masked_fill((mask_size == 0) | no_map, float("nan"))


def relevance_rank_accuracy(params: Params) -> Dice:
    """Quantus's RelevanceRankAccuracy: the share of the |M| most salient pixels inside the mask M.

    With |S| = |M| top pixels, Dice's 2|S ∩ M| / (|S| + |M|) is |S ∩ M| / |M|: the same number, so
    this is ``dice`` with ``binarize: topk`` under the name the explainability literature uses.
    """
    return Dice(DiceParams(binarize="topk"))


def register(registry: Registry[MetricFactory]) -> None:
    """Register the saliency-vs-mask metrics; called by the ``metrics`` entry point (``__init__.py``)."""
    registry.add("dice", Dice, params=DiceParams, description="Dice of the binarised saliency map and the mask, per image.")
    registry.add("auroc", Auroc, description="AUROC of saliency as a score for mask pixels, per image (ties averaged).")
    registry.add(
        "mass_in_mask",
        MassInMask,
        description="Fraction of saliency mass inside the mask, per image (Quantus's AttributionLocalisation).",
    )
    registry.add(
        "pointing_game",
        PointingGame,
        params=PointingGameParams,
        description="Pointing game: 1 if the map's maximum lies in the mask, per image (Quantus's definition).",
    )
    registry.add(
        "top_k_intersection",
        TopKIntersection,
        params=TopKParams,
        description="Share of the k most salient pixels inside the mask, per image (Quantus's TopKIntersection).",
    )
    registry.add(
        "relevance_rank_accuracy",
        relevance_rank_accuracy,
        description="Share of the |mask| most salient pixels inside the mask, per image (Quantus); equals dice with topk.",
    )
