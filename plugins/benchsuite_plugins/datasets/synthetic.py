"""Synthetic control datasets with known rotation properties; no files, no downloads.

- ``symmetric_shapes``: centred stars with k-fold rotational symmetry, so ``R_theta x == x`` (up
  to interpolation) exactly when theta is a multiple of 360/k degrees.
- ``axis_textures``: a region filled with a texture whose gradients point along the image axes,
  on a weak isotropic background: the case the HoG "shortcut" hypothesis is about.
- ``isotropic_texture``: the matched control. With the same seed it has the same regions, masks
  and background as ``axis_textures``; only the texture inside the region is isotropic.

Every image is drawn in one vectorised pass from a ``torch.Generator`` seeded by ``seed``, so a
dataset is a pure function of its parameters and the image size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from benchsuite.api import DatasetFactory, DataSpec, ImageMaskSet, Params, Registry, hookimpl

# Soft edges ramp linearly over this many pixels: wide enough that bilinear resampling (as in a
# rotation) barely changes them, narrow enough that shapes stay crisp at 32 px.
_EDGE_PX = 1.0


class ShapeParams(Params):
    """Parameters of ``symmetric_shapes``."""

    k: int = Field(
        4, ge=2, le=12, description="Order of rotational symmetry: every shape is invariant under rotation by 360/k degrees."
    )
    n_images: int = Field(256, ge=1, le=100_000, description="Number of images.")
    seed: int = Field(0, ge=0, description="Seed of the generator that draws every shape; the same seed gives the same images.")


class TextureParams(Params):
    """Parameters of ``axis_textures`` and ``isotropic_texture``."""

    n_images: int = Field(256, ge=1, le=100_000, description="Number of images.")
    seed: int = Field(
        0, ge=0, description="Seed of the generator; the same seed gives the same regions in axis_textures and isotropic_texture."
    )
    contrast: float = Field(
        0.8, gt=0, le=1, description="Peak-to-peak amplitude of the foreground texture, as a fraction of [0, 1]."
    )
    background: float = Field(
        0.25, ge=0, lt=1, description="Amplitude of the isotropic background texture relative to the foreground's (0: flat grey)."
    )


def _pixel_coordinates(size: int) -> tuple[Tensor, Tensor]:
    """Column and row offsets [1, H, W] from the image centre, in pixels.

    The centre is pixel index (size - 1) / 2, which is the rotation centre of ``affine_grid`` /
    ``grid_sample`` with ``align_corners=False``; anything centred here rotates about itself.
    """
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
    return cols[None], rows[None]


def _coverage(distance: Tensor) -> Tensor:
    """Anti-aliased fill in [0, 1] from a signed distance to an edge (positive inside), in pixels."""
    return (distance / _EDGE_PX + 0.5).clamp(0, 1)


def _uniform(n: int, low: float | Tensor, high: float | Tensor, generator: torch.Generator) -> Tensor:
    """``n`` draws from U(low, high), shaped [n, 1, 1] to broadcast over an image."""
    return low + (high - low) * torch.rand(n, 1, 1, generator=generator)


def _make_set(values: Tensor, masks: Tensor) -> ImageMaskSet:
    """Wrap single-channel images [N, H, W] as the contract's [N, 1, H, W] float32 in [0, 1]."""
    return ImageMaskSet(images=values.clamp(0, 1).to(torch.float32)[:, None].contiguous(), masks=masks)


def symmetric_shapes(params: ShapeParams, spec: DataSpec) -> ImageMaskSet:
    """Centred stars r(phi) = r0 (1 + a cos(k (phi - phi0))) of random size, depth, phase and intensity.

    The background is exactly 0, so the images change under a rotation only where the star does.
    Every star fits inside the inscribed circle, so no rotation moves any of it out of the frame.
    """
    n, k, generator = params.n_images, params.k, torch.Generator().manual_seed(params.seed)
    depth = _uniform(n, 0.2, 0.5, generator)
    outer = 0.45 * spec.size - _EDGE_PX  # largest radius of a star, inside the inscribed circle
    r0 = _uniform(n, 0.2 * spec.size, outer / (1 + depth), generator)
    phase = _uniform(n, 0.0, 2 * math.pi, generator)
    intensity = _uniform(n, 0.4, 1.0, generator)

    x, y = _pixel_coordinates(spec.size)
    rho, phi = torch.hypot(x, y), torch.atan2(y, x)
    angle = k * (phi - phase)
    radius = r0 * (1 + depth * torch.cos(angle))
    # r(phi) - rho overstates the distance to a star's steep flanks: divide by the secant of the
    # angle between the boundary and the circle through it, (1 + (r'/r)^2)^(1/2), so edges are
    # ~1 px wide everywhere and the interpolation error of rotations stays small.
    slope = depth * k * torch.sin(angle) / (1 + depth * torch.cos(angle))
    coverage = _coverage((radius - rho) / torch.sqrt(1 + slope**2))
    return _make_set(intensity * coverage, coverage > 0.5)


def _regions(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Soft coverage [N, H, W] of one randomly placed, sized and oriented ellipse per image.

    Each ellipse (axis ratio 0.5 to 1, so disks are included) lies wholly inside the image.
    """
    semi_major = _uniform(n, 0.18 * size, 0.35 * size, generator)
    semi_minor = semi_major * _uniform(n, 0.5, 1.0, generator)
    tilt = _uniform(n, 0.0, math.pi, generator)
    cos, sin = torch.cos(tilt), torch.sin(tilt)
    # Half-extents of the rotated ellipse's bounding box bound where its centre may go.
    half_x = torch.hypot(semi_major * cos, semi_minor * sin) + _EDGE_PX
    half_y = torch.hypot(semi_major * sin, semi_minor * cos) + _EDGE_PX
    limit = (size - 1) / 2
    cx = _uniform(n, -limit + half_x, limit - half_x, generator)
    cy = _uniform(n, -limit + half_y, limit - half_y, generator)

    x, y = _pixel_coordinates(size)
    u = ((x - cx) * cos + (y - cy) * sin) / semi_major
    v = (-(x - cx) * sin + (y - cy) * cos) / semi_minor
    level = torch.hypot(u, v)
    # First-order distance to the level set level == 1, in pixels: (1 - level) / |grad level|.
    grad = torch.hypot(u / semi_major, v / semi_minor) / level.clamp_min(1e-6)
    return _coverage((1 - level) / grad.clamp_min(1e-6))


def _texture_period(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Per-image feature period [N, 1, 1] in pixels: a fixed share of the image, but at least 6 px."""
    return _uniform(n, max(6.0, size / 6), max(12.0, size / 3), generator)


def _isotropic_noise(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Isotropic texture [N, H, W] in (-1, 1): white noise low-passed by a radial Gaussian spectrum.

    The filter depends only on |f|, so the texture's statistics are the same in every direction;
    ``tanh`` of the standardised field bounds it without favouring any orientation.
    """
    period = _texture_period(n, size, generator)
    noise = torch.randn(n, size, size, generator=generator)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    cutoff = 1 / period  # cycles per pixel
    spectrum = torch.exp(-0.5 * (fx**2 + fy**2) / cutoff**2)
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * spectrum, s=(size, size))
    field = (field - field.mean(dim=(1, 2), keepdim=True)) / field.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return torch.tanh(field)


def _axis_texture(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Axis-aligned textures [N, H, W] in [-1, 1]: soft gratings and checkerboards.

    Each image is, with equal odds, a vertical grating, a horizontal grating or their product (a
    checkerboard), with random periods and phases. Anti-aliased square waves have gradients only
    across their edges, so orientations cluster at 0, 90, 180 and 270 degrees; gratings are in
    the mix because a checkerboard's corners blur into diagonal gradients when its squares are
    only a few pixels wide.
    """
    x, y = _pixel_coordinates(size)
    coordinates = torch.stack([x, y])  # [2, 1, H, W]: one square wave along each axis
    period = _texture_period(2 * n, size, generator).view(2, n, 1, 1)
    phase = _uniform(2 * n, 0.0, 2 * math.pi, generator).view(2, n, 1, 1)
    carrier = torch.sin(2 * math.pi * coordinates / period + phase)
    # Near a zero crossing carrier ~ (2 pi / period) * offset: rescale it to a distance in pixels.
    waves = 2 * _coverage(carrier * period / (2 * math.pi)) - 1
    kind = torch.randint(3, (n, 1, 1), generator=generator)  # 0: checkerboard, 1: only x wave, 2: only y wave
    along_x = torch.where(kind == 2, 1.0, waves[0])
    along_y = torch.where(kind == 1, 1.0, waves[1])
    return along_x * along_y


def _textured_regions(params: TextureParams, spec: DataSpec, texture: Literal["axis", "isotropic"]) -> ImageMaskSet:
    """A textured region on a weaker isotropic background; mask = the region.

    Regions and backgrounds are drawn before the foreground texture, so both datasets share them
    for a given seed and differ only in what fills the region.
    """
    n, size, generator = params.n_images, spec.size, torch.Generator().manual_seed(params.seed)
    region = _regions(n, size, generator)
    background = _isotropic_noise(n, size, generator)
    foreground = _axis_texture(n, size, generator) if texture == "axis" else _isotropic_noise(n, size, generator)
    amplitude = params.contrast / 2
    values = 0.5 + amplitude * (region * foreground + (1 - region) * params.background * background)
    return _make_set(values, region > 0.5)


def axis_textures(params: TextureParams, spec: DataSpec) -> ImageMaskSet:
    """Regions filled with axis-aligned gratings and checkerboards: gradient orientations cluster on the axes."""
    return _textured_regions(params, spec, "axis")


def isotropic_texture(params: TextureParams, spec: DataSpec) -> ImageMaskSet:
    """Regions filled with isotropic low-pass noise: the control for ``axis_textures``."""
    return _textured_regions(params, spec, "isotropic")


@hookimpl
def benchsuite_register_datasets(registry: Registry[DatasetFactory]) -> None:
    """Register the three synthetic control datasets."""
    registry.add(
        "symmetric_shapes",
        symmetric_shapes,
        params=ShapeParams,
        description="Centred stars with k-fold rotational symmetry on a black background; mask = the star.",
    )
    registry.add(
        "axis_textures",
        axis_textures,
        params=TextureParams,
        description="Ellipses filled with axis-aligned gratings or checkerboards on weak isotropic noise; mask = the ellipse.",
    )
    registry.add(
        "isotropic_texture",
        isotropic_texture,
        params=TextureParams,
        description="Control for axis_textures: the same ellipses filled with isotropic low-pass noise.",
    )
