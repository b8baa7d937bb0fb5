"""Sanity and faithfulness of the saliency maps: do they depend on what the model learnt, and on what it computes?

- ``randomisation_correlation`` is the model-parameter randomisation test of Adebayo et al.
  ("Sanity Checks for Saliency Maps", 2018): the Spearman rank correlation, per image, between
  the cell's map and the map the same saliency method gives for the same architecture with
  re-initialised weights (every module's ``reset_parameters``, seeded by the cell). A method
  whose maps reflect the learnt weights shows a low correlation; one that passes through the
  image's edges whatever the weights (the failure the paper found for guided backpropagation)
  shows a high one. The re-initialised model is explained with the cell's own saliency method,
  noise and augmentation draws (``MetricInputs.explain``).
- ``deletion_auc`` is the deletion curve (Petsiuk et al. 2018, "RISE"; Samek et al. 2017): the
  most salient pixels are replaced first, ``steps`` times a share 1/steps more, and the
  objective saliency explains (``MetricInputs.objective``, the pair similarity with the cell's
  fixed draws) is scored after each; the per-image value is the area under that curve over the
  share deleted (trapezoid, 0 to 1). A faithful map makes the similarity fall early: a smaller
  area. ``normalise`` divides the curve by its start, so images of different similarity compare.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from benchsuite.api import MetricFactory, MetricInputs, Params, Registry, hookimpl
from benchsuite_plugins.metrics.localisation import average_ranks, salience_rank


class RandomisationParams(Params):
    """Parameters of ``randomisation_correlation``."""

    statistic: Literal["spearman", "spearman_abs"] = Field(
        "spearman",
        description="Rank correlation of the two maps ('spearman'), or its magnitude ('spearman_abs'), as in "
        "Adebayo et al.'s figures.",
    )


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every module's parameters re-drawn by its ``reset_parameters``, seeded; eval mode."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[p.device for p in fresh.parameters() if p.is_cuda][:1]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh.eval()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row pair of ``a`` and ``b`` [N, P]; NaN for a constant row."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    return (ra * rb).sum(dim=1) / (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()


class RandomisationCorrelation:
    """Spearman correlation, per image, of the trained model's map and a re-initialised model's map."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = False  # a map that passes the check changes with the weights
    reads_masks = False  # compares two maps; the mask plays no part

    def __init__(self, params: RandomisationParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        trained = inputs.saliency.flatten(1)
        if trained.isnan().all():
            return torch.full((len(trained),), float("nan"), device=trained.device)
        # Another seed than the cell's own initialisation, derived from it.
        random_maps = inputs.explain(reinitialised(inputs.objective.model, inputs.seed + 1_000_003)).flatten(1)
        rho = spearman(trained.double(), random_maps.double())
        rho = rho.abs() if self.params.statistic == "spearman_abs" else rho
        undefined = trained.isnan().any(dim=1) | random_maps.isnan().any(dim=1)
        return rho.float().masked_fill(undefined, float("nan"))


class DeletionParams(Params):
    """Parameters of ``deletion_auc``."""

    steps: int = Field(
        16, ge=1, le=4096, description="Points of the curve after the start: a share 1/steps more pixels deleted each."
    )
    fill: Literal["zeros", "mean", "blur"] = Field(
        "mean",
        description="What a deleted pixel becomes: black, the image's mean intensity, or the image blurred "
        "(sigma = 1/16 of its side).",
    )
    normalise: bool = Field(
        True,
        description="Divide the curve by the similarity of the intact image, so the curve starts at 1; NaN for an image "
        "whose intact similarity is not positive, where the ratio would turn a rise into a fall.",
    )
    batch_size: int = Field(256, ge=1, le=65_536, description="Images per forward pass; never changes the result.")


class DeletionAuc:
    """Area under the objective-vs-share-deleted curve, most salient pixels deleted first; per image."""

    scope: Literal["image", "cell"] = "image"
    higher_is_better: bool | None = False  # a faithful map deletes the similarity first
    reads_masks = False  # the curve needs the map and the model, not the mask

    def __init__(self, params: DeletionParams) -> None:
        self.params = params

    def __call__(self, inputs: MetricInputs) -> Tensor:
        curve = self.curve(inputs)  # [N, steps + 1]
        undefined = inputs.saliency.flatten(1).isnan().any(dim=1)
        if self.params.normalise:
            undefined |= curve[:, 0] <= 0
            curve = curve / curve[:, :1]
        shares = torch.linspace(0, 1, self.params.steps + 1, device=curve.device, dtype=curve.dtype)
        area = torch.trapezoid(curve, shares, dim=1)
        return area.float().masked_fill(undefined, float("nan"))

    def curve(self, inputs: MetricInputs) -> Tensor:
        """The objective [N, steps + 1] after deleting 0, 1/steps, ..., all of each image's pixels, most salient first."""
        images, p = inputs.images, self.params
        n, _, h, w = images.shape
        saliency = inputs.saliency.flatten(1).nan_to_num(nan=0.0)
        position = salience_rank(saliency)
        filled = _fill(images, p.fill)
        cut = torch.round(torch.linspace(0, h * w, p.steps + 1, device=images.device)).long()  # pixels deleted per step
        index = torch.arange(n, device=images.device)
        scores = []
        with torch.no_grad():
            for deleted in cut:
                rows = torch.where((position < deleted).view(n, 1, h, w), filled, images)
                scores.append(
                    torch.cat(
                        [
                            inputs.objective(rows[i : i + p.batch_size], index[i : i + p.batch_size])
                            for i in range(0, n, p.batch_size)
                        ]
                    )
                )
        return torch.stack(scores, dim=1).double()


def _fill(images: Tensor, kind: str) -> Tensor:
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
    import kornia

    sigma = max(images.shape[-1] / 16, 0.5)
    half = min(int(3 * sigma), (min(images.shape[-2:]) - 1) // 2)
    return kornia.filters.gaussian_blur2d(images, 2 * half + 1, (sigma, sigma), border_type="reflect")


@hookimpl
def benchsuite_register_metrics(registry: Registry[MetricFactory]) -> None:
    """Register ``randomisation_correlation`` and ``deletion_auc``."""
    registry.add(
        "randomisation_correlation",
        RandomisationCorrelation,
        params=RandomisationParams,
        description="Model-parameter randomisation: Spearman correlation of the map with a re-initialised model's map, "
        "per image.",
    )
    registry.add(
        "deletion_auc",
        DeletionAuc,
        params=DeletionParams,
        description="Deletion curve: area under the pair similarity as the most salient pixels are deleted first, per image.",
    )
