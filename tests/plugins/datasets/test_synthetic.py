"""The synthetic control datasets: the contract, determinism, and the property each one exists for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from scipy import ndimage

from benchsuite.api import DataSpec, ImageMaskSet
from benchsuite.engine.registry import default_registry

NAMES = ("symmetric_shapes", "axis_textures", "isotropic_texture")


def build(name: str, size: int = 32, **params: object) -> ImageMaskSet:
    """Build a dataset through the installed entry points, as the core does."""
    component = default_registry().get("datasets", name)
    return component.factory(component.params.model_validate(params), DataSpec(size))


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Bilinear rotation about the image centre with zero fill, as a rotation pretext task does."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]]).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def orientation_histogram(data: ImageMaskSet, bins: int) -> np.ndarray:
    """Magnitude-weighted gradient orientations over the foreground, bins centred on multiples of 360/bins.

    Scharr derivatives, because plain central differences measure diagonal gradients ~10% too
    large at these spatial frequencies and would tilt the histogram by themselves.
    """
    images, masks = data.images[:, 0].double().numpy(), data.masks.numpy()
    derivative, smoothing = [-0.5, 0.0, 0.5], np.array([3.0, 10.0, 3.0]) / 16
    gx = ndimage.correlate1d(ndimage.correlate1d(images, derivative, axis=2), smoothing, axis=1)
    gy = ndimage.correlate1d(ndimage.correlate1d(images, derivative, axis=1), smoothing, axis=2)
    angle = np.degrees(np.arctan2(gy, gx))[masks]
    counts, _ = np.histogram((angle + 180 / bins) % 360, bins=bins, range=(0, 360), weights=np.hypot(gx, gy)[masks])
    return counts / counts.sum()


def axis_to_diagonal_ratio(data: ImageMaskSet) -> float:
    """Gradient mass within 22.5 degrees of an image axis over the mass nearer a diagonal."""
    eighths = orientation_histogram(data, bins=8)
    return float(eighths[0::2].sum() / eighths[1::2].sum())


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_256_images_through_the_registry(name: str) -> None:
    data = build(name)
    assert data.images.shape == (256, 1, 32, 32)
    assert data.masks.shape == (256, 32, 32)


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("name", NAMES)
def test_images_are_float32_in_unit_range_with_bool_masks(name: str, size: int) -> None:
    data = build(name, size, n_images=16)
    assert data.images.dtype == torch.float32 and data.masks.dtype == torch.bool
    assert data.images.shape == (16, 1, size, size)
    assert data.images.min() >= 0 and data.images.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_every_mask_is_non_empty(name: str) -> None:
    data = build(name, n_images=64)
    assert data.masks.flatten(1).any(dim=1).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_datasets(name: str) -> None:
    first, second = build(name, n_images=8, seed=3), build(name, n_images=8, seed=3)
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_give_different_images(name: str) -> None:
    first, second = build(name, n_images=8, seed=0), build(name, n_images=8, seed=1)
    assert (first.images - second.images).abs().mean() > 0.01


@pytest.mark.parametrize("name", NAMES)
def test_generation_leaves_the_global_random_state_alone(name: str) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build(name, n_images=8)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("k", [1, 13])
def test_symmetry_order_outside_2_to_12_is_refused(k: int) -> None:
    params = default_registry().get("datasets", "symmetric_shapes").params
    with pytest.raises(ValidationError, match="k"):
        params.model_validate({"k": k})


@pytest.mark.parametrize("k", [2, 3, 5, 12])
def test_rotating_shapes_by_360_over_k_leaves_them_nearly_unchanged(k: int) -> None:
    images = build("symmetric_shapes", k=k, n_images=64).images
    error = (rotate(images, 360 / k) - images).abs().mean()
    assert error < 0.15 * images.mean()


@pytest.mark.parametrize("k", [2, 3, 5, 12])
def test_rotating_shapes_by_half_the_symmetry_angle_changes_them_clearly(k: int) -> None:
    images = build("symmetric_shapes", k=k, n_images=64).images
    error = (rotate(images, 180 / k) - images).abs().mean()
    assert error > 0.5 * images.mean()


@pytest.mark.parametrize("size", [32, 33])
def test_shapes_are_centred_on_the_rotation_centre_of_grid_sample(size: int) -> None:
    images = build("symmetric_shapes", size, k=3, n_images=64).images[:, 0]
    index = torch.arange(size, dtype=torch.float32)
    mass = images.sum(dim=(1, 2))
    centroid_x = (images.sum(dim=1) * index).sum(dim=1) / mass
    centroid_y = (images.sum(dim=2) * index).sum(dim=1) / mass
    centre = torch.full_like(mass, (size - 1) / 2)
    torch.testing.assert_close(centroid_x, centre, atol=0.02, rtol=0)
    torch.testing.assert_close(centroid_y, centre, atol=0.02, rtol=0)


def test_shapes_stay_inside_the_inscribed_circle_on_a_black_background() -> None:
    size = 32
    images = build("symmetric_shapes", size, n_images=64).images[:, 0]
    offsets = torch.arange(size) - (size - 1) / 2
    radius = torch.hypot(offsets[:, None], offsets[None, :])
    assert images[:, radius > size / 2 - 1].eq(0).all()


def test_axis_texture_gradients_concentrate_on_the_axes() -> None:
    assert axis_to_diagonal_ratio(build("axis_textures", n_images=128)) > 2


def test_isotropic_texture_gradients_favour_neither_axes_nor_diagonals() -> None:
    assert 0.9 < axis_to_diagonal_ratio(build("isotropic_texture", n_images=128)) < 1.1


def test_isotropic_texture_orientation_histogram_is_flat() -> None:
    sixteenths = orientation_histogram(build("isotropic_texture", n_images=128), bins=16) * 16
    assert sixteenths.min() > 0.75 and sixteenths.max() < 1.33


def test_texture_regions_stay_inside_the_image() -> None:
    masks = build("axis_textures", n_images=64).masks
    border = torch.cat([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], dim=1)
    assert not border.any()


def test_isotropic_control_shares_masks_and_background_with_axis_textures() -> None:
    axis, control = build("axis_textures", n_images=32, seed=5), build("isotropic_texture", n_images=32, seed=5)
    assert torch.equal(axis.masks, control.masks)
    # The soft region edge reaches one pixel beyond the mask; beyond that only background remains.
    outside = ~F.max_pool2d(axis.masks[:, None].float(), 5, stride=1, padding=2)[:, 0].bool()
    assert torch.equal(axis.images[:, 0][outside], control.images[:, 0][outside])
    assert not torch.equal(axis.images[:, 0][axis.masks], control.images[:, 0][axis.masks])


@pytest.mark.parametrize("name", ["axis_textures", "isotropic_texture"])
def test_zero_background_leaves_flat_grey_outside_the_region(name: str) -> None:
    data = build(name, n_images=16, background=0.0)
    outside = ~F.max_pool2d(data.masks[:, None].float(), 5, stride=1, padding=2)[:, 0].bool()
    assert data.images[:, 0][outside].eq(0.5).all()


@pytest.mark.parametrize("name", ["axis_textures", "isotropic_texture"])
def test_foreground_spans_at_most_the_contrast(name: str) -> None:
    data = build(name, n_images=16, contrast=0.4)
    assert (data.images - 0.5).abs().max() <= 0.2 + 1e-6
