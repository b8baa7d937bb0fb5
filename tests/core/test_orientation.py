"""The gradient-orientation histogram follows the rotation convention of the study."""

from __future__ import annotations

import torch

from benchsuite.engine.orientation import orientation_histogram


def ramp(rows: bool) -> torch.Tensor:
    line = torch.arange(16.0) / 16  # exact in binary, so the cross derivative is exactly zero
    image = line.view(16, 1).expand(16, 16) if rows else line.view(1, 16).expand(16, 16)
    return image.reshape(1, 1, 16, 16)


def test_intensity_growing_to_the_right_points_at_0_degrees():
    hist = orientation_histogram(ramp(rows=False), bins=36)
    assert hist[0] == 1.0


def test_intensity_growing_down_the_rows_points_at_270_degrees():
    hist = orientation_histogram(ramp(rows=True), bins=36)
    assert hist[27] == 1.0  # bin [270, 280): down as displayed


def test_rotating_images_by_90_degrees_shifts_the_histogram_by_90_degrees():
    images = torch.rand(4, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    hist = orientation_histogram(images, bins=36)
    rotated = orientation_histogram(torch.rot90(images, 1, dims=(-2, -1)), bins=36)
    torch.testing.assert_close(rotated, torch.roll(hist, 9))


def test_histogram_is_a_distribution_and_a_flat_image_has_none():
    images = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    assert torch.isclose(orientation_histogram(images, bins=12).sum(), torch.tensor(1.0, dtype=torch.float64))
    assert orientation_histogram(torch.ones(1, 1, 8, 8), bins=12).sum() == 0
