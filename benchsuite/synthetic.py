"""Synthetic results cubes with planted θ-curves, built with numpy alone (no training).

Tests and ``benchmarks/`` use them to push a cube of any size through the analysis and the
report: the cube is laid out as the store writes one (the grid :data:`~benchsuite.cube.AXES`,
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

from benchsuite.cube import AXES, IMAGE, METRIC, ORIENTATION_HIST

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
) -> xr.Dataset:
    """A cube over ``datasets × thetas × seeds × methods × encoders`` with :data:`IMAGE_METRICS` per image.

    ``thetas`` is a count of evenly spaced angles around the circle or the angles themselves.
    Memory: 4 bytes per cell and image for each of the three per-image metrics, made one at a time.
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
        variables[name] = ((*AXES, IMAGE), values, {"role": METRIC, "scope": "image", "better": "higher"})
    for name in CELL_METRICS:
        loss = 2.0 - level + rng.standard_normal(shape, dtype=np.float32) * np.float32(run_sd)
        variables[name] = (AXES, loss.astype(np.float32), {"role": METRIC, "scope": "cell", "better": "lower"})
    centres = np.deg2rad((np.arange(ORIENTATION_BINS) + 0.5) * 360 / ORIENTATION_BINS)
    histograms = np.stack([1 + 0.5 * np.cos(PLANTED_HARMONICS[d % 4] * centres) for d in range(datasets)])
    histograms /= histograms.sum(axis=1, keepdims=True)
    variables[ORIENTATION_HIST] = (("dataset", "orientation"), histograms, {"role": "covariate"})
    return xr.Dataset(
        variables,
        coords={
            "dataset": [f"set{d}" for d in range(datasets)],
            "theta": angles,
            "seed": np.arange(seeds),
            "method": [f"method{m}" for m in range(methods)],
            "encoder": [f"encoder{e}" for e in range(encoders)],
            IMAGE: np.arange(images),
            "orientation": (np.arange(ORIENTATION_BINS) + 0.5) * 360 / ORIENTATION_BINS,
        },
        attrs={"suite_name": "synthetic"},
    )
