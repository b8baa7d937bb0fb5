"""Saliency maps drawn over their images, with the mask outlined: the overlays TensorBoard shows for detailed cells."""

from __future__ import annotations

import numpy as np

OUTLINE_RGB = np.array([0.0, 1.0, 1.0])
"""Colour of the mask outline: cyan, which the black-red-yellow-white heat scale never uses."""

GREY_CEILING = 0.6
"""The brightest image pixel's grey level: dimmer than the heat scale, so saliency on bright
foreground stays visible instead of washing out to pink."""

MIN_OVERLAY_SIZE = 128
"""Overlays are upscaled (nearest neighbour) to at least this many pixels on their longer side,
so a one-pixel outline sits on the mask's boundary without hiding a whole image pixel."""


def _inner_outline(masks: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; the image border does not count as outside."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), mode="edge")
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return masks & ~interior


def _rescale_per_map(maps: np.ndarray) -> np.ndarray:
    """Each [H, W] map of a [N, H, W] stack linearly to [0, 1]; a constant map becomes 0."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def saliency_overlays(images: np.ndarray, saliency: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """RGB overlays [N, 3, H', W'] in [0, 1] of saliency maps on their images, with the mask outlined.

    ``images`` [N, C, H, W] are shown in grey (channel mean, rescaled per image); ``saliency``
    [N, H, W] is rescaled per map to [0, 1] and blended over it in a black-red-yellow-white heat
    scale with opacity equal to the saliency, so unimportant pixels keep the image visible;
    the inner boundary of ``masks`` [N, H, W] is drawn in :data:`OUTLINE_RGB`. Everything is
    upscaled by a whole factor to at least :data:`MIN_OVERLAY_SIZE` pixels.
    """
    scale = -(-MIN_OVERLAY_SIZE // max(saliency.shape[1:]))  # ceiling division

    def upscale(stack: np.ndarray) -> np.ndarray:
        return stack.repeat(scale, axis=-2).repeat(scale, axis=-1)

    grey = GREY_CEILING * upscale(_rescale_per_map(images.astype(np.float64).mean(axis=1)))[:, None]
    heat = upscale(_rescale_per_map(saliency.astype(np.float64)))[:, None]
    # The 'hot' colour scale: red, then green, then blue ramp up over successive thirds.
    hot = np.clip(3 * heat - np.arange(3).reshape(1, 3, 1, 1), 0, 1)
    rgb = (1 - heat) * grey + heat * hot
    outline = _inner_outline(upscale(masks.astype(bool)))[:, None]
    rgb = np.where(outline, OUTLINE_RGB.reshape(1, 3, 1, 1), rgb)
    return rgb.astype(np.float32)
