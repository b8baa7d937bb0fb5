"""The ``rotation`` augmentation: (x, R_theta x), counter-clockwise in degrees, defined fill."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from benchsuite.engine.registry import default_registry


def make_rotation(**params):
    component = default_registry().get("augmentations", "rotation")
    return component.factory(component.params.model_validate(params))


def radius_map(size: int) -> torch.Tensor:
    """Distance of each pixel centre from the image centre."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return (coords[:, None] ** 2 + coords[None, :] ** 2).sqrt()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_quarter_turns_match_rot90(quarter_turns, channels):
    x = torch.rand(2, channels, 9, 9)
    _, rotated = make_rotation()(x, 90.0 * quarter_turns)
    torch.testing.assert_close(rotated, torch.rot90(x, quarter_turns, dims=(-2, -1)))


def test_positive_angle_turns_counter_clockwise_as_displayed():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, -1] = 1.0  # top-right corner, row 0 at the top
    _, rotated = make_rotation()(x, 90.0)
    assert rotated[0, 0, 0, 0] == pytest.approx(1.0)  # now top-left
    assert rotated.sum() == pytest.approx(1.0)


def test_zero_angle_returns_the_input_twice():
    x = torch.rand(3, 2, 8, 8)
    view1, view2 = make_rotation()(x, 0.0)
    assert view1 is x
    torch.testing.assert_close(view2, x)


def test_full_turn_gives_the_same_pair_as_no_turn():
    x = torch.rand(3, 1, 8, 8)
    rotation = make_rotation()
    assert torch.equal(rotation(x, 360.0)[1], rotation(x, 0.0)[1])


def test_fill_value_appears_in_the_corners_at_45_degrees():
    x = torch.ones(1, 2, 16, 16)
    _, rotated = make_rotation(fill=-2.0)(x, 45.0)
    corners = rotated[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.full_like(corners, -2.0))
    torch.testing.assert_close(rotated[..., 6:10, 6:10], torch.ones(1, 2, 4, 4))


def test_non_square_half_turn_matches_rot90():
    x = torch.rand(2, 1, 6, 10)
    _, rotated = make_rotation()(x, 180.0)
    torch.testing.assert_close(rotated, torch.rot90(x, 2, dims=(-2, -1)))


@pytest.mark.parametrize(("height", "width"), [(12, 12), (10, 16)])
def test_bilinear_rotation_matches_torchvision_rotate(height, width):
    x = torch.rand(2, 3, height, width)
    _, rotated = make_rotation()(x, 30.0)
    expected = TF.rotate(x, 30.0, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(rotated, expected, atol=1e-5, rtol=1e-5)


def test_nearest_interpolation_only_copies_input_or_fill_values():
    x = torch.randint(0, 5, (1, 1, 10, 10)).float()
    _, rotated = make_rotation(interpolation="nearest", fill=7.0)(x, 33.0)
    assert set(rotated.unique().tolist()) <= set(x.unique().tolist()) | {7.0}


def test_rotation_is_differentiable_in_the_input():
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    rotation = make_rotation(fill=0.5)
    assert torch.autograd.gradcheck(lambda image: rotation(image, 30.0)[1], (x,))


def test_45_degree_turn_barely_changes_a_centred_disk():
    radius = radius_map(64)
    x = (radius <= 20.0).float().expand(1, 1, 64, 64)
    _, rotated = make_rotation()(x, 45.0)
    away_from_edge = (radius - 20.0).abs() > 1.5
    torch.testing.assert_close(rotated[..., away_from_edge], x[..., away_from_edge])
    assert rotated.sum().item() == pytest.approx(x.sum().item(), rel=0.01)
