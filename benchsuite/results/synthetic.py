"""Synthetic results cubes with planted θ-curves, built with numpy alone (no training).

Tests and ``benchmarks/`` use them to push a cube of any size through the analysis and the
report: the cube is laid out as the store writes one (the grid :data:`~benchsuite.results.cube.AXES`,
per-image metrics with ``scope="image"``, a cell-scope loss, each dataset's orientation
histogram), in float32 as the store keeps per-image values.

Each dataset's metrics follow a planted curve of θ, ``0.5 + amplitude × cos(k θ)`` with ``k``
cycling through :data:`PLANTED_HARMONICS` (0 is flat), plus an offset per encoder and method, a
random effect per training run and per image, and noise. Saliency metrics are NaN at θ = 0, as
for a real run, where the two views are identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from benchsuite.results.cube import (
    AXES,
    BETTER,
    CELL,
    CHANNEL,
    COVARIATE,
    CURVE,
    DATASET,
    DEVICE,
    DIAGNOSTIC,
    ENCODER,
    EPOCH,
    EXAMPLE,
    EXAMPLE_IMAGE,
    EXAMPLE_INDEX,
    EXAMPLE_MASK,
    EXAMPLE_THETA,
    HIGHER,
    IDENTICAL_VIEWS,
    IMAGE,
    LOWER,
    METHOD,
    METRIC,
    ORIENTATION,
    ORIENTATION_HIST,
    PEAK_MEMORY,
    PROVENANCE,
    ROLE,
    SALIENCY_EXAMPLE,
    SCOPE,
    SEED,
    SSP_LOSS,
    SUITE_NAME,
    THETA,
    UNITS,
    WALL_TIME,
    X,
    Y,
)

PLANTED_HARMONICS = (4, 0, 2, 1)
"""The harmonic k of dataset i's planted curve cos(k θ) is ``PLANTED_HARMONICS[i % 4]``; 0 is a flat curve."""

IMAGE_METRICS = ("auroc", "mass_in_mask", "pointing_game")
CELL_METRICS = ("final_loss",)
ORIENTATION_BINS = 36


def planted_curve(dataset_index: int, thetas: np.ndarray, amplitude: float = 0.1) -> np.ndarray:
    """The planted mean of dataset ``dataset_index``'s metrics at ``thetas`` (degrees)."""
    k = PLANTED_HARMONICS[dataset_index % len(PLANTED_HARMONICS)]
    return 0.5 + amplitude * np.cos(k * np.deg2rad(thetas)) if k else np.full(len(thetas), 0.5)


def synthetic_cube(
    *,
    datasets: int = 4,
    thetas: int | Sequence[float] = 3600,
    seeds: int = 2,
    methods: int = 1,
    encoders: int = 1,
    images: int = 32,
    amplitude: float = 0.1,
    run_sd: float = 0.02,
    image_sd: float = 0.05,
    noise_sd: float = 0.05,
    random_seed: int = 0,
    detail: int = 0,
    size: int = 16,
) -> xr.Dataset:
    """A cube over ``datasets × thetas × seeds × methods × encoders`` with :data:`IMAGE_METRICS` per image.

    ``thetas`` is a count of evenly spaced angles around the circle or the angles themselves.
    Memory: 4 bytes per cell and image for each of the three per-image metrics, made one at a time.
    With ``detail``, the cube also holds what a report draws, as the store writes it: saliency
    examples (4 maps of ``size`` pixels) at ``detail`` evenly spread angles over
    :data:`~benchsuite.results.cube.EXAMPLE_THETA` (NaN at θ = 0, where the views are identical), each
    dataset's example images and masks, the SSP loss per epoch and the cells' provenance.
    """
    angles = np.arange(thetas) * 360.0 / thetas if isinstance(thetas, int) else np.asarray(thetas, dtype=float)
    rng = np.random.default_rng(random_seed)
    shape = (datasets, len(angles), seeds, methods, encoders)
    means = np.stack([planted_curve(d, angles, amplitude) for d in range(datasets)]).astype(np.float32)
    offsets = (0.02 * np.arange(methods)[:, None] + 0.01 * np.arange(encoders)[None, :]).astype(np.float32)
    level = means[:, :, None, None, None] + offsets[None, None, None]
    identical = np.isclose(np.mod(angles, 360.0), 0.0)
    variables = {}
    for name in IMAGE_METRICS:
        values = rng.standard_normal((*shape, images), dtype=np.float32) * np.float32(noise_sd)
        values += (level + rng.standard_normal(shape, dtype=np.float32) * np.float32(run_sd))[..., None]
        values += (rng.standard_normal((datasets, images), dtype=np.float32) * np.float32(image_sd))[:, None, None, None, None]
        values[:, identical] = np.nan  # saliency is undefined where the two views are the same image
        variables[name] = ((*AXES, IMAGE), values, {ROLE: METRIC, SCOPE: IMAGE, BETTER: HIGHER})
    for name in CELL_METRICS:
        loss = 2.0 - level + rng.standard_normal(shape, dtype=np.float32) * np.float32(run_sd)
        variables[name] = (AXES, loss.astype(np.float32), {ROLE: METRIC, SCOPE: CELL, BETTER: LOWER})
    centres = np.deg2rad((np.arange(ORIENTATION_BINS) + 0.5) * 360 / ORIENTATION_BINS)
    histograms = np.stack([1 + 0.5 * np.cos(PLANTED_HARMONICS[d % 4] * centres) for d in range(datasets)])
    histograms /= histograms.sum(axis=1, keepdims=True)
    variables[ORIENTATION_HIST] = ((DATASET, ORIENTATION), histograms, {ROLE: COVARIATE})
    levels = {
        DATASET: [f"set{d}" for d in range(datasets)],
        THETA: angles,
        SEED: np.arange(seeds),
        METHOD: [f"method{m}" for m in range(methods)],
        ENCODER: [f"encoder{e}" for e in range(encoders)],
    }
    cube = xr.Dataset(
        variables,
        coords={
            **levels,
            IMAGE: np.arange(images),
            ORIENTATION: (np.arange(ORIENTATION_BINS) + 0.5) * 360 / ORIENTATION_BINS,
        },
        attrs={SUITE_NAME: "synthetic"},
    )
    if not detail:
        return cube
    kept = np.linspace(0, len(angles), detail, endpoint=False).round().astype(int)
    drawn = _drawn(rng, shape, identical, kept, size)
    return cube.assign(drawn).assign_coords({EXAMPLE_THETA: angles[kept], EPOCH: np.arange(10)})


def _drawn(
    rng: np.random.Generator, shape: tuple[int, ...], identical: np.ndarray, kept: np.ndarray, size: int
) -> dict[str, tuple]:
    """What a report draws besides the metrics: example maps at the angles ``kept`` (indices), images, curves, provenance."""
    lead = (shape[0], len(kept), *shape[2:])
    maps = rng.random((*lead, 4, size, size), dtype=np.float32)
    maps[:, identical[kept]] = np.nan
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2).astype(np.float32)
    epochs = 10
    loss = 3 - np.linspace(0, 1, epochs, dtype=np.float32) + rng.standard_normal((*shape, epochs), dtype=np.float32) * 0.02
    return {
        SALIENCY_EXAMPLE: ((DATASET, EXAMPLE_THETA, *AXES[2:], EXAMPLE_INDEX, Y, X), maps, {ROLE: EXAMPLE}),
        EXAMPLE_IMAGE: ((DATASET, EXAMPLE_INDEX, CHANNEL, Y, X), rng.random((shape[0], 4, 1, size, size)), {ROLE: EXAMPLE}),
        EXAMPLE_MASK: ((DATASET, EXAMPLE_INDEX, Y, X), np.broadcast_to(disc, (shape[0], 4, size, size)), {ROLE: EXAMPLE}),
        SSP_LOSS: ((*AXES, EPOCH), loss, {ROLE: CURVE}),
        IDENTICAL_VIEWS: (
            AXES,
            np.broadcast_to(identical[None, :, None, None, None], shape).astype(np.int64),
            {ROLE: DIAGNOSTIC},
        ),
        WALL_TIME: (AXES, rng.uniform(0.1, 0.2, shape), {ROLE: PROVENANCE, UNITS: "s"}),
        PEAK_MEMORY: (AXES, rng.uniform(300, 400, shape), {ROLE: PROVENANCE, UNITS: "MiB"}),
        DEVICE: (AXES, np.full(shape, "cuda:0", dtype=object), {ROLE: PROVENANCE}),
    }
