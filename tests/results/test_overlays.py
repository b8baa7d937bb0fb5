"""The saliency overlays that TensorBoard shows of a detailed cell: the map over the dimmed image, the mask outlined."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from benchsuite.results.overlays import GREY_CEILING, OUTLINE_RGB, saliency_overlays


def test_overlay_outlines_exactly_the_inner_boundary_of_the_mask():
    yy, xx = np.mgrid[:16, :16]
    mask = (yy - 7) ** 2 + (xx - 8) ** 2 < 20
    rng = np.random.default_rng(0)
    overlay = saliency_overlays(rng.random((1, 1, 16, 16)), rng.random((1, 16, 16)), mask[None])
    upscaled = mask.repeat(8, axis=0).repeat(8, axis=1)
    is_outline = np.all(overlay[0] == OUTLINE_RGB.reshape(3, 1, 1), axis=0)
    np.testing.assert_array_equal(is_outline, find_boundaries(upscaled, mode="inner"))


def test_overlay_draws_no_outline_along_the_image_border():
    overlay = saliency_overlays(np.zeros((1, 1, 16, 16)), np.zeros((1, 16, 16)), np.ones((1, 16, 16), dtype=bool))
    assert not np.all(overlay == OUTLINE_RGB.reshape(1, 3, 1, 1), axis=1).any()


def test_overlay_shows_the_dimmed_image_where_saliency_is_lowest_and_white_where_highest():
    image = np.linspace(0, 2, 256).reshape(1, 1, 16, 16)  # rescaled per image to 0..1
    saliency = np.zeros((1, 16, 16))
    saliency[0, 3, 4] = 5.0
    overlay = saliency_overlays(image, saliency, np.zeros((1, 16, 16), dtype=bool))
    np.testing.assert_allclose(overlay[0, :, 3 * 8, 4 * 8], 1.0)
    grey = GREY_CEILING * np.linspace(0, 1, 256).reshape(16, 16)[10, 12]
    np.testing.assert_allclose(overlay[0, :, 10 * 8, 12 * 8], grey, rtol=1e-6)
