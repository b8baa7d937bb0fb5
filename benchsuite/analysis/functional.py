"""Do whole θ-curves differ between datasets? A permutation test over replicate curves.

The harmonic F-tests (:mod:`benchsuite.analysis.harmonic`) ask about a curve of K harmonics.
This test asks about the curves as sampled, with no model of their shape: each replicate (a
seed's cell means over every θ) is one curve, and the statistic is the functional F ratio of
between-dataset to within-dataset variation summed over θ (the "FP" statistic of Górecki and
Smaga's functional ANOVA)::

    F = [Σ_θ SS_between(θ) / (k − 1)] / [Σ_θ SS_within(θ) / (n − k)]

over n curves of k datasets. Its null distribution comes from permuting the dataset labels of
whole curves (the seeds are exchangeable between datasets when the curves do not differ), so
correlation between neighbouring angles needs no model. Curves are compared within each
combination of the other factors (method, encoder, swept parameters): one row per combination.
Angles where some curve has no value (saliency at θ = 0) are left out of that combination.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.periodicity import series_keys
from benchsuite.results.cube import DATASET, ENCODER, METHOD, REPLICATE, THETA, metric_names
from benchsuite.results.errors import BenchsuiteError

PERMUTATIONS = 999
"""Random relabellings per test; the smallest p it can give is 1 / (PERMUTATIONS + 1) = 0.001."""

RANDOM_SEED = 0
"""The permutations are drawn from a generator seeded with this, so a cube always gives the same table."""

TEST_COLUMNS = ["n_datasets", "n_curves", "n_theta", "F", "p", "n_permutations"]
CURVE_TEST_COLUMNS = ["metric", METHOD, ENCODER, *TEST_COLUMNS]
"""The columns of :func:`curve_test_table`; a swept parameter's column follows ``encoder``."""

_BATCH = 2**24
"""Floats of permuted group sums computed at a time (128 MB)."""


class CurveTestError(BenchsuiteError, ValueError):
    """The curves cannot support the test; the message says why."""


def functional_f(curves: np.ndarray, labels: np.ndarray) -> float:
    """The functional F ratio of ``curves`` [n, T] between the groups of ``labels`` [n]."""
    codes = np.unique(labels, return_inverse=True)[1]
    return float(_f_ratios(curves, codes[None, :])[0])


def permutation_test(
    curves: np.ndarray, labels: np.ndarray, n_permutations: int = PERMUTATIONS, seed: int = RANDOM_SEED
) -> tuple[float, float]:
    """The functional F of ``curves`` [n, T] between ``labels`` and its permutation p-value.

    p = (1 + #{relabellings with F ≥ the observed F}) / (1 + ``n_permutations``), over random
    relabellings of whole curves. Raises :class:`CurveTestError` with fewer than two groups or
    without a replicate curve in some group.
    """
    codes = np.unique(labels, return_inverse=True)[1]
    k, n = int(codes.max()) + 1, len(codes)
    if k < 2:
        raise CurveTestError(f"{k} dataset(s) with values; comparing curves needs two or more.")
    if n <= k:
        raise CurveTestError(f"{n} curves for {k} datasets leave no replicate to measure the spread within a dataset: add seeds.")
    observed = _f_ratios(curves, codes[None, :])[0]
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH // (k * curves.shape[1]))
    exceed = 0
    for start in range(0, n_permutations, batch):
        relabelled = rng.permuted(np.broadcast_to(codes, (min(batch, n_permutations - start), n)), axis=1)
        # A relabelling's F equals the observed one up to rounding when it only swaps whole groups.
        exceed += int(np.sum(_f_ratios(curves, relabelled) >= observed * (1 - 1e-12)))
    return float(observed), (1 + exceed) / (1 + n_permutations)


def curve_test_table(cube: xr.Dataset, metrics: Sequence[str] | None = None, n_permutations: int = PERMUTATIONS) -> pd.DataFrame:
    """:func:`permutation_test` of the datasets' curves of every metric, per combination of the other factors.

    Columns: ``metric, method, encoder``, a column per swept parameter, then ``n_datasets,
    n_curves, n_theta, F, p, n_permutations``. A combination that cannot be tested (one dataset,
    one seed) is skipped with a warning naming the metric, the combination and the reason.
    """
    names = metric_names(cube) if metrics is None else list(metrics)
    strata = [key for key in series_keys(cube) if key != DATASET]
    rows = []
    for name in names:
        frame = cell_means(cube, name)
        curves = frame.pivot_table(index=[*strata, DATASET, REPLICATE], columns=THETA, values="value", aggfunc="first")
        for key, block in curves.groupby(level=strata, sort=False):
            labels = dict(zip(strata, key, strict=True))
            values = block.dropna(axis=1, how="any").to_numpy(dtype=float)
            try:
                statistic, p = permutation_test(values, block.index.get_level_values(DATASET).to_numpy(), n_permutations)
            except CurveTestError as error:
                shown = ", ".join(f"{k}={v!r}" for k, v in labels.items())
                warnings.warn(f"curve test of metric {name!r} skipped for ({shown}): {error}", stacklevel=2)
                continue
            n_datasets = block.index.get_level_values(DATASET).nunique()
            rows.append(
                {"metric": name, **labels, "n_datasets": n_datasets, "n_curves": len(block), "n_theta": values.shape[1]}
                | {"F": statistic, "p": p, "n_permutations": n_permutations}
            )
    return pd.DataFrame(rows, columns=["metric", *strata, *TEST_COLUMNS])


def _f_ratios(curves: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The functional F for each labelling in ``codes`` [B, n] of ``curves`` [n, T]."""
    k, n = int(codes.max()) + 1, curves.shape[0]
    centred = curves - curves.mean(axis=0)
    total = float(np.sum(centred**2))
    one_hot = (codes[:, None, :] == np.arange(k)[None, :, None]).astype(float)  # [B, k, n]
    sums = one_hot @ centred  # [B, k, T]: each group's sum of centred curves
    between = np.sum(sums**2, axis=2) / one_hot.sum(axis=2)  # Σ_θ n_g (mean_g − grand mean)²
    between = between.sum(axis=1)
    within = total - between
    return (between / (k - 1)) / (np.maximum(within, 1e-300) / (n - k))
