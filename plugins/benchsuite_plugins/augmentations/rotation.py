"""The ``rotation`` pair augmentation: the positive pair ``(x, R_theta x)`` of the rotation study.

Convention: ``theta`` is in degrees and a positive angle turns the image counter-clockwise as it
is displayed with row 0 at the top, about the image centre. So ``theta=90`` equals
``torch.rot90(x, 1, dims=(-2, -1))`` for square images, and ``theta=-theta`` undoes ``theta``
up to interpolation. Pixels that come from outside the image take the value ``fill``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from benchsuite.api import AugmentationFactory, Params, Registry, hookimpl


class RotationParams(Params):
    """Parameters of the ``rotation`` augmentation."""

    interpolation: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="How rotated pixels are sampled between grid points."
    )
    fill: float = Field(
        0.0,
        ge=-1e6,
        le=1e6,
        description="Value of the pixels that the rotation brings in from outside the image.",
    )


def _cos_sin(theta: float) -> tuple[float, float]:
    """Cosine and sine of ``theta`` degrees, exact at multiples of 90 degrees.

    ``math.cos(math.radians(90))`` is 6e-17, not 0; that residue would make a quarter turn
    sample between pixels and blur the image, so quarter turns are snapped to exact values.
    """
    turns, rest = divmod(theta, 90.0)
    if rest == 0.0:
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(turns) % 4]
    radians = math.radians(theta)
    return math.cos(radians), math.sin(radians)


def _is_quarter_turn(theta: float, h: int, w: int) -> bool:
    turns, rest = divmod(theta, 90.0)
    return rest == 0 and (h == w or turns % 2 == 0)


def _inverse(theta: float, h: int, w: int, like: Tensor) -> Tensor:
    """The [2, 3] ``affine_grid`` matrix of a turn by ``theta`` degrees of an H x W image.

    affine_grid maps each output location to the input location it samples, so the matrix is
    the inverse rotation. Normalised coordinates span [-1, 1] on both axes; the aspect terms
    keep the rotation rigid in pixel units when H != W. With y pointing down, this inverse sends
    the output's top-left corner to the input's top-right one for theta=90, i.e. a
    counter-clockwise turn as displayed.
    """
    cos, sin = _cos_sin(theta)
    return torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=like.dtype, device=like.device)


class Rotation:
    """Rotates a batch about its centre with one ``affine_grid`` + ``grid_sample`` call."""

    def __init__(self, params: RotationParams):
        self.params = params

    def rotate(self, x: Tensor, theta: float) -> Tensor:
        """Return ``R_theta x`` for a batch ``x`` [N, C, H, W]; differentiable in ``x``."""
        n, _, h, w = x.shape
        if _is_quarter_turn(theta, h, w):
            # Quarter turns move pixels without resampling: exact, so theta = 0 gives x itself
            # bit for bit, which the core relies on to recognise an identical pair.
            return torch.rot90(x, int(theta // 90) % 4, dims=(-2, -1))
        grid = F.affine_grid(_inverse(theta, h, w, x).expand(n, 2, 3), [n, 1, h, w], align_corners=False)
        return self._sample(x, grid)

    def _sample(self, x: Tensor, grid: Tensor) -> Tensor:
        # Rotating x - fill with zero padding and adding fill back gives exactly `fill` outside
        # the image and blends it correctly at the border, for any fill value.
        fill = self.params.fill
        rotated = F.grid_sample(x - fill, grid, mode=self.params.interpolation, padding_mode="zeros", align_corners=False)
        return rotated + fill

    def __call__(self, x: Tensor, theta: float) -> tuple[Tensor, Tensor]:
        """Return the positive pair ``(x, R_theta x)`` for a batch ``x`` [N, C, H, W]."""
        return x, self.rotate(x, theta)

    def stacked(self, x: Tensor, thetas: Sequence[float]) -> tuple[Tensor, Tensor]:
        """The pairs of K stacked models at once: ``x`` [K, N, C, H, W], model k's batch turned by ``thetas[k]``.

        Equals ``self(x[k], thetas[k])`` for every k: quarter turns with ``rot90``, every other
        angle in one ``affine_grid`` + ``grid_sample`` over all their images, rather than K calls.
        """
        k, n, c, h, w = x.shape
        out = torch.empty_like(x)
        resample = [i for i, theta in enumerate(thetas) if not _is_quarter_turn(theta, h, w)]
        for i in sorted(set(range(k)) - set(resample)):
            out[i] = self.rotate(x[i], thetas[i])
        if resample:
            inverse = torch.stack([_inverse(thetas[i], h, w, x) for i in resample])  # [R, 2, 3]
            grid = F.affine_grid(inverse.repeat_interleave(n, dim=0), [len(resample) * n, 1, h, w], align_corners=False)
            rotated = self._sample(x[resample].reshape(len(resample) * n, c, h, w), grid)
            out[resample] = rotated.reshape(len(resample), n, c, h, w)
        return x, out


@hookimpl
def benchsuite_register_augmentations(registry: Registry[AugmentationFactory]) -> None:
    """Register the ``rotation`` pair augmentation."""
    registry.add(
        "rotation",
        Rotation,
        params=RotationParams,
        description="Pair (x, R_theta x): rotation about the centre, counter-clockwise in degrees.",
    )
