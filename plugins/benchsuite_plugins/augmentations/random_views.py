"""The ``random_views`` augmentation: the standard SSL augmentations, drawn per image and view, with one ``strength``.

Each view of each image gets its own random resized crop, horizontal and vertical flip,
brightness and contrast jitter, Gaussian blur and Gaussian noise, in that order (SimCLR's
order: geometry, then intensity), on the batch's device in a handful of batched calls. The
rotation study's turn comes on top: ``rotation: fixed`` turns the second view by the cell's
theta (the pair of the ``rotation`` augmentation, with the same convention and the same exact
quarter turns), ``rotation: random`` turns each view by its own angle drawn uniformly from
[-theta, theta].

``strength`` scales every magnitude together: at 1 the crop keeps 8-100 % of the area at
aspect ratios 3/4-4/3, flips happen with probability ``hflip`` and ``vflip``, brightness moves
by up to ``brightness``, contrast by a factor within 1 +/- ``contrast`` (each with probability
0.8, SimCLR's), blur has sigma 0.1-``blur_sigma`` pixels (probability 0.5) and noise has
standard deviation ``noise`` (probability 0.5); at 0 every view is its image (turned by the
rotation). The probabilities of jitter, blur and noise stay fixed; a flip's probability is its
magnitude. ``weak`` gives the first view its own strength: a weak/strong pair.

Draws and views are separate (``api.Augmentation``): ``draw`` samples every random number
from the generator it is given (the same numbers at every strength, so cells that differ only
in strength see the same crops, scaled: common random numbers), and ``__call__`` applies a draw
deterministically and differentiably in ``x``. Pixels brought in from outside the image (a
turn's corners) take ``fill``. The crop, flips and a random turn are one affine resampling
(``grid_sample``); a fixed turn is the ``rotation`` augmentation's own, after it. Blur and
jitter are kornia's (``kornia.filters.gaussian_blur2d``, ``kornia.enhance``). An image whose
draw changes nothing is passed through bit for bit, so at strength 0 and theta 0 the two views
are equal and the core knows the cell has no saliency.
"""

from __future__ import annotations

import math
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from benchsuite.api import AugmentationFactory, Draw, Params, PluginError, Registry, hookimpl
from benchsuite_plugins.augmentations.rotation import Rotation, RotationParams

# SimCLR's probabilities of colour jitter and blur; noise, which SimCLR does not use, as blur.
_JITTER_P = 0.8
_BLUR_P = 0.5
_NOISE_P = 0.5
_SIGMA_MIN = 0.1  # pixels; SimCLR draws blur sigma from [0.1, 2.0]


class RandomViewsParams(Params):
    """Parameters of ``random_views``; the magnitudes are those at ``strength`` 1."""

    strength: float = Field(
        1.0, ge=0, le=1, description="Scales every magnitude below together: 0 is no augmentation, 1 is SimCLR's."
    )
    weak: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Strength of the first view alone, for weak/strong pairs (e.g. 0.2 with strength 1). "
        "None: both views at 'strength'.",
    )
    crop_scale: float = Field(0.08, gt=0, le=1, description="Smallest area fraction the random resized crop keeps.")
    crop_ratio: float = Field(4 / 3, ge=1, le=10, description="Largest aspect ratio of the crop (and its inverse the smallest).")
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.5, ge=0, le=1, description="Probability of a vertical flip (medical images have no canonical up).")
    brightness: float = Field(0.4, ge=0, le=1, description="Largest brightness shift, added to pixels in [0, 1].")
    contrast: float = Field(0.4, ge=0, le=1, description="Largest relative contrast change about the image mean.")
    blur_sigma: float = Field(2.0, ge=_SIGMA_MIN, le=32, description="Largest Gaussian blur sigma, in pixels.")
    noise: float = Field(0.05, ge=0, le=1, description="Standard deviation of the additive Gaussian noise.")
    rotation: Literal["fixed", "random"] = Field(
        "fixed",
        description="'fixed': the second view is turned by theta, as in the 'rotation' augmentation; "
        "'random': each view is turned by its own angle, uniform in [-theta, theta].",
    )
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="How resampled pixels are interpolated.")
    fill: float = Field(0.0, ge=-1e6, le=1e6, description="Value of pixels brought in from outside the image.")


_VIEWS = ("1", "2")


class RandomViews:
    """The standard SSL augmentations as a random pair augmentation (``draw``, then ``__call__``)."""

    def __init__(self, params: RandomViewsParams):
        self.params = params
        self._rotation = Rotation(RotationParams(interpolation=params.interpolation, fill=params.fill))

    def draw(self, x: Tensor, theta: float, generator: torch.Generator) -> Draw:
        """The random parameters of both views of every image of ``x`` [N, C, H, W], from ``generator``.

        Per view ``v``: ``affine{v}`` [N, 2, 3] (crop, flips and a random turn, as an
        ``affine_grid`` matrix from output to input), ``brightness{v}`` and ``contrast{v}`` [N],
        ``sigma{v}`` [N] (0: no blur) and ``noise{v}`` [N, C, H, W].
        """
        p = self.params
        n, device = x.shape[0], generator.device
        if x.shape[-1] != x.shape[-2]:
            raise PluginError(f"random_views takes square images, got {tuple(x.shape[-2:])}")

        def uniform(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)

        draw: Draw = {}
        strengths = (p.strength if p.weak is None else p.weak, p.strength)
        for view, s in zip(_VIEWS, strengths, strict=True):
            # The same random numbers at every strength, scaled by it.
            area, log_ratio, centre, flips, turn, jitter, blur, noise_on = (uniform(n, k) for k in (1, 1, 2, 2, 1, 4, 2, 1))
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
            area = 1 - (1 - p.crop_scale) * s * area[:, 0]
            ratio = torch.exp(math.log(p.crop_ratio) * s * (2 * log_ratio[:, 0] - 1))
            half = torch.stack([(area * ratio).sqrt(), (area / ratio).sqrt()], dim=1).clamp(max=1)  # crop half-extent [N, 2]
            offset = (1 - half) * (2 * centre - 1)
            flip = torch.where(flips < torch.tensor([p.hflip * s, p.vflip * s], device=device), -1.0, 1.0)
            angle = theta * (2 * turn[:, 0] - 1) if p.rotation == "random" else torch.zeros(n, device=device)
            draw[f"affine{view}"] = _affine(half * flip, offset, angle)
            jittered = jitter[:, :2] < _JITTER_P
            draw[f"brightness{view}"] = torch.where(jittered[:, 0], p.brightness * s * (2 * jitter[:, 2] - 1), 0.0)
            draw[f"contrast{view}"] = torch.where(jittered[:, 1], 1 + p.contrast * s * (2 * jitter[:, 3] - 1), 1.0)
            sigma = s * (_SIGMA_MIN + (p.blur_sigma - _SIGMA_MIN) * blur[:, 1])
            draw[f"sigma{view}"] = torch.where(blur[:, 0] < _BLUR_P, sigma, 0.0)
            draw[f"noise{view}"] = noise * torch.where(noise_on[:, 0] < _NOISE_P, p.noise * s, 0.0).view(n, 1, 1, 1)
        return draw

    def __call__(self, x: Tensor, theta: float, draw: Draw) -> tuple[Tensor, Tensor]:
        """The two views of ``x`` [N, C, H, W] under ``draw`` (rows of :meth:`draw`'s output); differentiable in ``x``."""
        view1 = self._view(x, draw, "1")
        view2 = self._view(x, draw, "2")
        if self.params.rotation == "fixed":
            view2 = self._rotation.rotate(view2, theta)
        return view1, view2

    def _view(self, x: Tensor, draw: Draw, view: str) -> Tensor:
        x = self._warp(x, draw[f"affine{view}"].to(x.dtype))
        brightness, contrast = draw[f"brightness{view}"].to(x.dtype), draw[f"contrast{view}"].to(x.dtype)
        if (brightness != 0).any():
            x = _where(brightness != 0, kornia.enhance.adjust_brightness(x, brightness), x)
        if (contrast != 1).any():
            x = _where(contrast != 1, kornia.enhance.adjust_contrast_with_mean_subtraction(x, contrast), x)
        x = self._blur(x, draw[f"sigma{view}"].to(x.dtype))
        return x + draw[f"noise{view}"].to(x.dtype)

    def _warp(self, x: Tensor, affine: Tensor) -> Tensor:
        identity = torch.eye(2, 3, dtype=affine.dtype, device=affine.device)
        moved = (affine != identity).flatten(1).any(dim=1)
        if not moved.any():
            return x
        grid = F.affine_grid(affine, list(x.shape), align_corners=False)
        fill = self.params.fill
        warped = F.grid_sample(x - fill, grid, mode=self.params.interpolation, padding_mode="zeros", align_corners=False) + fill
        # Exact pass-through where nothing moves: resampling on the identity grid is not bit-exact.
        return _where(moved, warped, x)

    def _blur(self, x: Tensor, sigma: Tensor) -> Tensor:
        blurred = sigma > 0
        if not blurred.any():
            return x
        # One kernel size, 3 sigma each side of the largest sigma the parameters allow, so that an
        # image's blur does not depend on the other images of its batch (saliency chunks rows).
        half = min(math.ceil(3 * self.params.blur_sigma), (min(x.shape[-2:]) - 1) // 2)
        sigmas = sigma.clamp(min=_SIGMA_MIN / 10).unsqueeze(1).expand(-1, 2)
        return _where(blurred, kornia.filters.gaussian_blur2d(x, 2 * half + 1, sigmas, border_type="reflect"), x)


def _affine(scale: Tensor, offset: Tensor, angle: Tensor) -> Tensor:
    """[N, 2, 3] output-to-input matrices of ``rotate(flip(crop(x)))`` in ``affine_grid``'s normalised coordinates.

    ``scale`` [N, 2] is the crop's half-extent per axis, negative for a flipped axis; ``offset``
    [N, 2] is the crop's centre; ``angle`` [N] is the turn in degrees, counter-clockwise as
    displayed (the ``rotation`` augmentation's convention and inverse matrix, for square images).
    """
    radians = torch.deg2rad(angle)
    cos, sin = torch.cos(radians), torch.sin(radians)
    # cos/sin of 0 are exact, so an unturned view keeps an exact identity where nothing else moves.
    inverse_turn = torch.stack([torch.stack([cos, -sin], dim=1), torch.stack([sin, cos], dim=1)], dim=1)  # [N, 2, 2]
    linear = scale.unsqueeze(2) * inverse_turn
    return torch.cat([linear, offset.unsqueeze(2)], dim=2)


def _where(chosen: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` for the images where ``chosen`` [N] holds, ``b`` elsewhere."""
    return torch.where(chosen.view(-1, *([1] * (a.ndim - 1))), a, b)


@hookimpl
def benchsuite_register_augmentations(registry: Registry[AugmentationFactory]) -> None:
    """Register the ``random_views`` augmentation."""
    registry.add(
        "random_views",
        RandomViews,
        params=RandomViewsParams,
        description="Standard SSL views per image (crop, flips, jitter, blur, noise) with one strength knob, weak/strong "
        "pairs, and theta as a fixed or random turn.",
    )
