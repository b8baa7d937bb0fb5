"""What both tumour datasets of ``brats.py`` do once a case's volumes are read in RAS order: the
mask from the tumour labels, the slice choice, the normalisation and the squaring (steps 2 to 5
of that module's docstring).

A helper module, not an entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator
from torch import Tensor

from benchsuite.api import DataSpec, ImageMaskSet, Params, PluginError

Modality = Literal["flair", "t1", "t1ce", "t2"]
Foreground = Literal["whole_tumour", "tumour_core", "enhancing"]

_PERCENTILES = (1.0, 99.0)


class TumourSliceParams(Params):
    """The parameters both tumour datasets share: channels, foreground and slice selection."""

    modalities: tuple[Modality, ...] = Field(
        ("flair",), min_length=1, max_length=4, description="MRI sequences stacked as image channels, in this order."
    )
    foreground: Foreground = Field(
        "whole_tumour",
        description="Mask: whole_tumour (every tumour label), tumour_core (necrotic/non-enhancing core and "
        "enhancing tumour) or enhancing (enhancing tumour only).",
    )
    slices: Literal["largest", "index", "threshold"] = Field(
        "largest",
        description="Axial slices per case: largest (the one with the largest foreground area, the lowest on ties), "
        "index (slice_index), or threshold (every slice whose foreground area is at least min_area). "
        "Cases where the rule picks no slice with foreground (largest, threshold) are left out.",
    )
    slice_index: NonNegativeInt | None = Field(
        None, description="With slices: index, the axial slice to take, counted from inferior (0) after reorienting to RAS."
    )
    min_area: float = Field(
        0.01,
        gt=0,
        description="With slices: threshold, the smallest foreground area kept: below 1 a fraction of the slice, "
        "from 1 a number of pixels, both in the original volume.",
    )
    limit: PositiveInt | None = Field(None, description="Use at most this many cases, in sorted order; default: all.")

    @field_validator("modalities")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"modalities must not repeat, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _options_match_mode(self) -> TumourSliceParams:
        # A parameter that the chosen mode ignores is most likely a mistake in the suite.
        if self.slices == "index" and self.slice_index is None:
            raise ValueError("slices: index needs slice_index")
        # Checked by value, not by which fields were set: a cell re-validates its dumped params.
        if self.slices != "index" and self.slice_index is not None:
            raise ValueError(f"slice_index is only used with slices: index, not slices: {self.slices}")
        return self


def _select_slices(area: Tensor, slice_pixels: int, params: TumourSliceParams, case: str) -> Tensor:
    """Indices of the axial slices to keep, given the foreground pixel count of each slice [Z]."""
    if params.slices == "index":
        if params.slice_index >= len(area):  # type: ignore[operator]  # the validator requires it here
            raise PluginError(
                f"slice_index {params.slice_index} is out of range for case {case}, whose volume has {len(area)} "
                f"axial slices (0 to {len(area) - 1}); choose a smaller slice_index."
            )
        return torch.tensor([params.slice_index])
    if params.slices == "largest":
        return area.argmax().view(1) if area.max() > 0 else torch.empty(0, dtype=torch.long)
    # min_area below 1 is a fraction of the slice; both forms exceed 0, so empty slices never pass.
    min_pixels = params.min_area * slice_pixels if params.min_area < 1 else params.min_area
    return torch.nonzero(area >= min_pixels).flatten()


def _normalise(volumes: Tensor, slices: Tensor) -> Tensor:
    """``slices`` [C, X, Y, N] scaled by each channel's brain percentiles in ``volumes`` [C, X, Y, Z]."""
    bounds = torch.from_numpy(
        np.array([np.percentile(v[v > 0].numpy(), _PERCENTILES) if (v > 0).any() else (0.0, 1.0) for v in volumes])
    ).float()
    low, high = bounds[:, 0].view(-1, 1, 1, 1), bounds[:, 1].view(-1, 1, 1, 1)
    # A flat brain (high == low) would divide by zero; its voxels all land on 0 instead.
    return ((slices - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)


def _to_image_axes(slices: Tensor) -> Tensor:
    """[..., X, Y, N] of a RAS volume to [N, ..., H, W]: rows anterior to posterior, columns left to right."""
    return slices.movedim(-1, 0).transpose(-1, -2).flip(-2)


def _square(images: Tensor, masks: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Zero-pad [N, C, H, W] images and [N, H, W] masks to square, centred, and resize to ``size``."""
    height, width = images.shape[-2:]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    padding = (left, side - width - left, top, side - height - top)
    images = F.pad(images, padding)
    masks = F.pad(masks.float().unsqueeze(1), padding)
    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # Area coverage keeps the mask's size unbiased when shrinking, unlike nearest, which samples one pixel.
    masks = F.interpolate(masks, size=(size, size), mode="area")[:, 0] >= 0.5
    return images.clamp(0, 1), masks


def _case_slices(
    volumes: Tensor,
    labels: Tensor,
    label_table: dict[Foreground, tuple[int, ...]],
    params: TumourSliceParams,
    size: int,
    case: str,
) -> tuple[Tensor, Tensor]:
    """One case's chosen slices: images [N, C, size, size] and masks [N, size, size] (N may be 0).

    ``volumes`` [C, X, Y, Z] float32 and ``labels`` [X, Y, Z] are in RAS order.
    """
    known = torch.tensor((0, *label_table["whole_tumour"]))
    if not torch.isin(labels, known).all():
        found = torch.unique(labels).tolist()
        raise PluginError(
            f"case {case} has segmentation labels {found}, but this dataset expects only {known.tolist()}. "
            "BraTS 2023 and later renumber the enhancing tumour to 3; use BraTS 2020/2021 files with brats, "
            "and MSD Task01 files with msd_brain_tumour."
        )
    mask = torch.isin(labels, torch.tensor(label_table[params.foreground]))
    index = _select_slices(mask.sum(dim=(0, 1)), mask.shape[0] * mask.shape[1], params, case)
    images = _to_image_axes(_normalise(volumes, volumes[..., index]))
    return _square(images, _to_image_axes(mask[..., index]), size)


def collect(
    cases: list[tuple[str, Callable[[], tuple[Tensor, Tensor]]]],
    label_table: dict[Foreground, tuple[int, ...]],
    params: TumourSliceParams,
    spec: DataSpec,
    where: str,
) -> ImageMaskSet:
    """Build every case (a name and a loader of its RAS volumes and labels) and stack the slices."""
    images, masks = [], []
    for case, load in cases:
        volumes, labels = load()
        case_images, case_masks = _case_slices(volumes, labels, label_table, params, spec.size, case)
        images.append(case_images)
        masks.append(case_masks)
    if sum(len(m) for m in masks) == 0:
        raise PluginError(
            f"no case in {where} has a slice with {params.foreground} foreground under slices: {params.slices}"
            + (f" with min_area {params.min_area}; lower min_area or" if params.slices == "threshold" else ";")
            + " choose another foreground."
        )
    return ImageMaskSet(images=torch.cat(images).contiguous(), masks=torch.cat(masks).contiguous())
