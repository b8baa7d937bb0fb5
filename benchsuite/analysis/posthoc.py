"""Post hoc comparisons: which angles differ from which, within each dataset.

The ANOVA says whether θ matters in a dataset; Tukey's honestly significant difference (HSD)
says between which pairs of angles, with the family-wise error rate held at ``alpha`` over all
pairs of one dataset. The observations are cell means, one per seed, so the seeds are the
replicates, as in the ANOVA. The test is run per dataset (and per method, encoder and swept
parameter value, whatever the suite varies) with its own pooled within-θ variance; its table
is statsmodels' ``pairwise_tukeyhsd``'s (the tests hold it to that), with the studentized range
distribution from :mod:`benchsuite.analysis.studentized`, vectorised over a family's pairs.

A dense θ grid (more than :data:`MAX_THETAS` angles) has too many pairs to compare; given
``bins``, the angles are grouped into that many equal arcs first, each seed's cell means
averaged within an arc, and the arcs compared, each named by the angle it starts at.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.periodicity import SERIES_KEYS, PeriodicityError, circle_step, series_keys
from benchsuite.analysis.studentized import studentized_range_isf, studentized_range_sf
from benchsuite.results.cube import REPLICATE, THETA, metric_names
from benchsuite.results.errors import BenchsuiteError

MAX_THETAS = 36
"""More angles than this are a sweep, not a set of conditions to compare pairwise: 36 make 630
pairs per family already."""

DENSE_BINS = 12
"""The arcs a dense θ grid is binned into for Tukey HSD (30°, the default suite's grid), or the
suite's ``dense_above`` when that is fewer: 66 pairs a family, a table a reader can scan."""

PAIR_COLUMNS = ["theta_a", "theta_b", "meandiff", "p_adj", "lower", "upper", "reject"]
TUKEY_COLUMNS = ["metric", *SERIES_KEYS, *PAIR_COLUMNS]
"""The columns of :func:`tukey_table`; a swept parameter's column follows ``encoder``."""


class PosthocError(BenchsuiteError, ValueError):
    """The observations cannot support Tukey's test; the message says why."""


def tukey_hsd(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Tukey HSD between every pair of θ values in ``frame`` (columns ``theta`` and ``value``).

    Returns one row per pair with ``theta_a < theta_b`` and columns ``theta_a, theta_b,
    meandiff`` (mean at ``theta_b`` minus mean at ``theta_a``), ``p_adj`` (adjusted for all
    pairs), ``lower, upper`` (the simultaneous ``1 - alpha`` confidence interval of the
    difference) and ``reject`` (``p_adj < alpha``, decided as statsmodels decides it: the
    studentized range above its critical value, so that it agrees with the interval). Raises
    :class:`PosthocError` with fewer than two angles or without a replicate to estimate the
    within-θ variance from.
    """
    data = frame[[THETA, "value"]].dropna()
    n_groups = data[THETA].nunique()
    if n_groups < 2:
        raise PosthocError(f"{n_groups} θ value(s) with values; pairwise comparisons need two or more.")
    if len(data) <= n_groups:
        raise PosthocError(
            f"{len(data)} observations for {n_groups} θ values leave no degrees of freedom for the "
            "within-θ variance: add seeds to the suite."
        )
    thetas, group = np.unique(data[THETA].to_numpy(dtype=float), return_inverse=True)
    values = data["value"].to_numpy(dtype=float)
    counts = np.bincount(group)
    means = np.bincount(group, weights=values) / counts
    df = len(values) - n_groups
    variance = np.sum((values - means[group]) ** 2) / df  # pooled within θ
    a, b = np.triu_indices(n_groups, 1)
    meandiff = means[b] - means[a]
    # The standard error of a pair's difference over √2: the studentized range's scale.
    scale = np.sqrt(variance / 2.0 * (1.0 / counts[a] + 1.0 / counts[b]))
    q = np.abs(meandiff) / scale
    q_crit = studentized_range_isf(alpha, n_groups, df)
    return pd.DataFrame(
        {
            "theta_a": thetas[a],
            "theta_b": thetas[b],
            "meandiff": meandiff,
            "p_adj": studentized_range_sf(q, n_groups, df),
            "lower": meandiff - q_crit * scale,
            "upper": meandiff + q_crit * scale,
            "reject": q > q_crit,
        }
    )


def angle_bins(thetas: np.ndarray, n_bins: int, grid: np.ndarray) -> np.ndarray:
    """The start of the arc each of ``thetas`` (degrees) falls in, of ``n_bins`` equal arcs over ``grid``.

    ``grid`` is the cube's θ values, so that a metric without a value at some angle (saliency at
    0°) gets the same arcs. The arcs cover the circle from 0° when the grid samples it evenly,
    else the grid's range (its last step included, so that an even grid fills every arc alike).
    """
    angles = np.asarray(thetas, dtype=float)
    distinct = np.unique(np.asarray(grid, dtype=float))
    try:
        circle_step(distinct)
        start, span = 0.0, 360.0
    except PeriodicityError:
        start, span = distinct[0], (distinct[-1] - distinct[0]) * len(distinct) / max(len(distinct) - 1, 1)
    width = span / n_bins
    index = np.clip(np.floor((angles - start) / width + 1e-9), 0, n_bins - 1)
    return start + index * width


def tukey_table(
    cube: xr.Dataset,
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    max_thetas: int = MAX_THETAS,
    bins: int | None = None,
) -> pd.DataFrame:
    """Tukey HSD between the angles of every metric, within each family: a metric(θ) series.

    A family is one combination of :func:`~benchsuite.analysis.periodicity.series_keys`: the
    dataset, method, encoder and the value of each swept parameter. ``metrics`` defaults to
    every variable with ``role="metric"``. Columns: ``metric, dataset, method, encoder``, a column
    per swept parameter, then ``theta_a, theta_b, meandiff, p_adj, lower, upper, reject`` (see
    :func:`tukey_hsd`). A family that cannot be tested (a single seed, angles missing) is skipped
    with a warning naming the metric, the family and the reason. A cube with a single angle, or
    with more than ``max_thetas`` and no ``bins`` (at most ``max_thetas``) to group them into,
    raises :class:`PosthocError`.
    """
    n_thetas = cube.sizes[THETA]
    if n_thetas < 2:
        # Said once here, rather than once per family: a sweep of another parameter at one θ has many.
        raise PosthocError(f"the cube has {n_thetas} θ value(s); pairwise comparisons need two or more.")
    binned = bins is not None and n_thetas > max_thetas
    if binned and not 2 <= bins <= max_thetas:
        raise PosthocError(f"{bins} bins of θ; Tukey HSD compares between 2 and {max_thetas}.")
    if n_thetas > max_thetas and not binned:
        raise PosthocError(
            f"{n_thetas} θ values make {n_thetas * (n_thetas - 1) // 2} pairs per dataset, more than "
            f"pairwise comparisons can usefully show (limit {max_thetas} angles); read the "
            "periodicity analysis instead."
        )
    names = metric_names(cube) if metrics is None else list(metrics)
    keys = series_keys(cube)
    blocks = []
    for name in names:
        frame = cell_means(cube, name)
        if binned:
            frame = frame.assign(**{THETA: angle_bins(frame[THETA].to_numpy(), bins, cube[THETA].values)})
            frame = frame.groupby([*keys, REPLICATE, THETA], sort=False, as_index=False)["value"].mean()
        for key, family in frame.groupby(keys, sort=False):
            labels = dict(zip(keys, key, strict=True))
            try:
                pairs = tukey_hsd(family, alpha=alpha)
            except PosthocError as error:
                shown = ", ".join(f"{k}={v!r}" for k, v in labels.items())
                warnings.warn(f"Tukey HSD of metric {name!r} skipped for ({shown}): {error}", stacklevel=2)
                continue
            blocks.append(pairs.assign(metric=name, **labels))
    columns = ["metric", *keys, *PAIR_COLUMNS]
    if not blocks:
        return pd.DataFrame(columns=columns)
    return pd.concat(blocks, ignore_index=True)[columns]
