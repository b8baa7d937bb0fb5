"""Real brain MRI that needs no download: axial slices of the MNI ICBM152 2009 template.

nilearn ships the skull-stripped T1 template and its grey- and white-matter probability maps
inside the package (``nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz``);
``load_mni152_template`` and friends only read and optionally resample those files, so building
this dataset makes no network call. The mask of a slice is one tissue's probability above a
threshold, which gives the suite a real-anatomy dataset with a known, tissue-shaped foreground.
"""

from __future__ import annotations

from typing import Literal

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, field_validator
from torch import Tensor

from benchsuite.api import DatasetFactory, DataSpec, ImageMaskSet, Params, PluginError, Registry, hookimpl

# Intensity percentiles over the brain that map to 0 and 1: robust to the few extreme voxels.
_PERCENTILES = (0.01, 0.99)
# Resampling to 2 mm leaves denormal-sized values in the background; the skull-stripped brain
# itself is never darker than about 0.2 of the template's maximum.
_BRAIN_LEVEL = 0.05


class ICBM152Params(Params):
    """Parameters of ``icbm152``."""

    tissue: Literal["gm", "wm"] = Field("gm", description="Foreground: grey matter ('gm') or white matter ('wm').")
    threshold: float = Field(0.5, gt=0, lt=1, description="A pixel is foreground where the tissue probability exceeds this.")
    resolution: Literal[1, 2] = Field(
        2, description="Voxel size of the template in mm: with the defaults, 2 gives about 70 grey-matter slices, 1 about 140."
    )
    slices: tuple[NonNegativeInt, NonNegativeInt] | None = Field(
        None,
        description="Axial slice indices [start, stop), inferior to superior, at the chosen resolution; "
        "default: the whole volume. Slices without the tissue are always dropped.",
    )
    stride: int = Field(1, ge=1, le=100, description="Keep every stride-th slice of the range.")
    min_foreground: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Drop slices whose mask covers less than this fraction of the image, such as the few-pixel "
        "brainstem cross-sections at the bottom of the volume; slices with an empty mask are always dropped.",
    )

    @field_validator("slices")
    @classmethod
    def _nonempty_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError(f"slices [start, stop) needs start < stop, got [{value[0]}, {value[1]})")
        return value


def _load_volumes(resolution: int, tissue: str) -> tuple[Tensor, Tensor]:
    """The T1 template and the tissue probability map as float32 [X, Y, Z] tensors in RAS order."""
    # Imported here because importing nilearn takes seconds, and every plugin module is imported
    # whenever benchsuite starts; only suites that use this dataset should pay for it.
    from nilearn import datasets

    load_probability = {"gm": datasets.load_mni152_gm_template, "wm": datasets.load_mni152_wm_template}[tissue]
    t1, probability = datasets.load_mni152_template(resolution=resolution), load_probability(resolution=resolution)
    # The bundled files are RAS today; reorienting keeps "anterior up" true should that change.
    volumes = [nib.as_closest_canonical(image) for image in (t1, probability)]
    if volumes[0].shape != volumes[1].shape:
        raise PluginError(
            f"nilearn's ICBM152 T1 {volumes[0].shape} and {tissue} {volumes[1].shape} templates do not match; "
            "reinstall nilearn or report the nilearn version."
        )
    # caching="unchanged": nilearn keeps the T1 image in an lru_cache; do not grow it with a copy.
    t1_data, probability_data = (
        torch.from_numpy(np.ascontiguousarray(v.get_fdata(dtype=np.float32, caching="unchanged"))) for v in volumes
    )
    return t1_data, probability_data


def _normalise(t1: Tensor) -> Tensor:
    """Map the brain's robust intensity range to [0, 1] for the whole volume; background stays 0."""
    brain = t1[t1 > _BRAIN_LEVEL * t1.max()]
    low, high = torch.quantile(brain, torch.tensor(_PERCENTILES))
    return ((t1 - low) / (high - low)).clamp(0, 1)


def _axial_slices(volumes: Tensor, start: int, stop: int, stride: int) -> Tensor:
    """Slices [N, C, H, W] of RAS volumes [C, X, Y, Z]: anterior up, the subject's right on the right."""
    # Rows run along Y and columns along X; flipping Y puts anterior (high Y) at row 0.
    return volumes[..., start:stop:stride].permute(3, 0, 2, 1).flip(2)


def _square(slices: Tensor, size: int) -> Tensor:
    """Zero-pad [N, C, H, W] to square, centred, then resize to ``size`` with antialiased bilinear."""
    height, width = slices.shape[-2:]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    padded = F.pad(slices, (left, side - width - left, top, side - height - top))
    return F.interpolate(padded, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def icbm152(params: ICBM152Params, spec: DataSpec) -> ImageMaskSet:
    """Axial T1 slices of the ICBM152 template with a grey- or white-matter mask."""
    t1, probability = _load_volumes(params.resolution, params.tissue)
    depth = t1.shape[2]
    start, stop = params.slices if params.slices is not None else (0, depth)
    if stop > depth:
        raise PluginError(
            f"icbm152: slices [{start}, {stop}) is out of range; the {params.resolution} mm template has "
            f"axial slices [0, {depth}). Choose a range inside it, or omit 'slices' to use them all."
        )
    # Resize the probability map and threshold afterwards: a mask resized as a binary image would
    # have blocky, shifted edges, whereas this keeps the tissue boundary at sub-pixel accuracy.
    channels = torch.stack([_normalise(t1), probability])  # one resize for both
    resized = _square(_axial_slices(channels, start, stop, params.stride), spec.size)
    images, masks = resized[:, :1].clamp(0, 1), resized[:, 1] > params.threshold
    fraction = masks.flatten(1).float().mean(dim=1)
    keep = (fraction > 0) & (fraction >= params.min_foreground)
    if not keep.any():
        raise PluginError(
            f"icbm152: no slice in [{start}, {stop}) has {params.tissue} probability above {params.threshold} "
            f"on at least {params.min_foreground:.1%} of the image at size {spec.size}; widen 'slices', "
            "lower 'threshold' or lower 'min_foreground'."
        )
    return ImageMaskSet(images=images[keep].contiguous(), masks=masks[keep].contiguous())


@hookimpl
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    """Register ``icbm152``."""
    registry.add(
        "icbm152",
        icbm152,
        params=ICBM152Params,
        description="Axial T1 slices of the MNI ICBM152 template bundled with nilearn; mask = grey or white matter.",
    )
