"""θ as a periodic curve: harmonic regression of the cell means on a dense θ grid.

Above ``dense_above`` angles (:mod:`benchsuite.analysis.settings`) θ is not a set of conditions
but a sampled function on the circle. The ANOVA's categorical θ would spend one parameter per
angle and per angle and dataset (3,600 × 4 of them); here metric(θ) of each series (a
combination of the other factors that vary: dataset, method, encoder, swept parameters) is::

    value = a_series + Σ_{k=1..K} (b_k,series sin kθ + c_k,series cos kθ) + noise

fitted to the per-cell means (seeds are the replicates, as in the ANOVA) by least squares. K is
the suite's ``harmonics`` or, with ``"auto"``, the K of 1 … :data:`MAX_AUTO_HARMONICS` that
minimises the full model's AIC (n log(RSS/n) + 2 × parameters).

Each term is a nested F-test against the full model's residual:

- ``harmonics``: one curve shared by every series, against flat series (does θ matter at all);
- ``harmonics:<factor>`` for every other factor that varies: the curves differ between the
  levels of ``<factor>`` (each series of the other factors keeps its own curve), against one
  curve per combination of the other factors. With the dataset as the only other factor this is
  the Type II test of the curve × dataset interaction; with more it also holds the higher-order
  interactions that contain ``<factor>``: it asks whether the curve depends on ``<factor>`` at all.

The series' levels (the dataset's main effect and its kin) are in every model as one intercept
per series and are not tested here: the dense analysis is about the curves.

The fits never build the design matrix of the cells: they need only each series' sums per θ,
from which the normal equations of every model follow (the harmonic columns are the same for
every series). So 921,600 cells cost as much as their cell means.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from benchsuite.analysis.anova import RESIDUAL, TABLE_COLUMNS, AnovaError, cell_means, design_summary, varying_factors
from benchsuite.analysis.settings import HARMONIC_TERM, HARMONICS_CHOSEN
from benchsuite.results.cube import THETA, metric_names
from benchsuite.results.cube import factors as cube_factors

MAX_AUTO_HARMONICS = 20
"""The most harmonics ``"auto"`` tries (periods down to 18°): more would fit seed noise, and AIC's
penalty grows with the series times 2K."""

_CHUNK = 2**22
"""Floats of the per-θ outer products summed at a time: bounds the moments' working memory (32 MB)."""


def harmonic_basis(thetas: np.ndarray, k: int) -> np.ndarray:
    """Columns sin θ, cos θ, sin 2θ, cos 2θ, … up to ``k``, at ``thetas`` in degrees: shape [n, 2k]."""
    radians = np.deg2rad(np.asarray(thetas, dtype=float))[:, None] * np.arange(1, k + 1)[None, :]
    return np.stack([np.sin(radians), np.cos(radians)], axis=-1).reshape(len(radians), 2 * k)


@dataclass(frozen=True)
class Moments:
    """The normal equations of ``value ~ series intercept + harmonic curve`` per series, intercept absorbed.

    ``xx`` [S, 2K, 2K] and ``xy`` [S, 2K] are the cross-products of the harmonic columns and the
    values within each series about the series' means; ``yy`` [S] is each series' sum of squares
    about its mean; ``n`` the observations in all.
    """

    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray
    n: int

    def truncated(self, k: int) -> Moments:
        """The moments of the first ``k`` harmonics (the columns are ordered by harmonic)."""
        return Moments(self.xx[:, : 2 * k, : 2 * k], self.xy[:, : 2 * k], self.yy, self.n)


def series_moments(series: np.ndarray, theta: np.ndarray, values: np.ndarray, thetas: np.ndarray, k: int) -> Moments:
    """:class:`Moments` of observations ``values`` in series ``series`` (codes 0..S-1) at angle ``thetas[theta]``."""
    n_series, n_theta = int(series.max()) + 1, len(thetas)
    centred = values - values.mean()  # keeps the sums of squares below from cancelling
    cell = series * n_theta + theta
    counts = np.bincount(cell, minlength=n_series * n_theta).reshape(n_series, n_theta).astype(float)
    sums = np.bincount(cell, weights=centred, minlength=n_series * n_theta).reshape(n_series, n_theta)
    design = np.column_stack([np.ones(n_theta), harmonic_basis(thetas, k)])
    width = design.shape[1]
    raw_xx = np.zeros((n_series, width * width))
    step = max(1, _CHUNK // (width * width))
    for start in range(0, n_theta, step):  # Σ_θ count × outer(x_θ), a few θ at a time
        block = design[start : start + step]
        raw_xx += counts[:, start : start + step] @ (block[:, :, None] * block[:, None, :]).reshape(len(block), -1)
    raw_xx = raw_xx.reshape(n_series, width, width)
    raw_xy = sums @ design
    raw_yy = np.bincount(series, weights=centred**2, minlength=n_series)
    count, sx, sy = raw_xx[:, 0, 0], raw_xx[:, 0, 1:], raw_xy[:, 0]
    return Moments(
        xx=raw_xx[:, 1:, 1:] - sx[:, :, None] * sx[:, None, :] / count[:, None, None],
        xy=raw_xy[:, 1:] - sx * (sy / count)[:, None],
        yy=raw_yy - sy**2 / count,
        n=len(values),
    )


def grouped_fit(moments: Moments, groups: np.ndarray | None) -> tuple[float, int]:
    """Residual sum of squares and curve parameters of the model whose series in one group share a curve.

    ``groups`` gives each series its group's code; None fits no curve at all (flat series).
    Every series keeps its own intercept. Rank-deficient groups (too few angles for the
    harmonics) count only the parameters they can estimate.
    """
    if groups is None:
        return float(moments.yy.sum()), 0
    n_groups = int(groups.max()) + 1
    membership = np.zeros((n_groups, len(groups)))
    membership[groups, np.arange(len(groups))] = 1.0
    xx = np.einsum("gs,spq->gpq", membership, moments.xx)
    xy = membership @ moments.xy
    eigenvalues, vectors = np.linalg.eigh(xx)
    tolerance = eigenvalues.max(axis=1, keepdims=True) * xx.shape[1] * np.finfo(float).eps * 100
    keep = eigenvalues > tolerance
    projected = np.einsum("gp,gpq->gq", xy, vectors)
    explained = np.where(keep, projected**2 / np.where(keep, eigenvalues, 1.0), 0.0).sum()
    return float(moments.yy.sum() - explained), int(keep.sum())


@dataclass(frozen=True)
class HarmonicFit:
    """The nested F-tests of one metric (``terms``, indexed by term, columns of the ANOVA) and its K."""

    terms: pd.DataFrame
    harmonics: int


def harmonic_anova(frame: pd.DataFrame, factors: Sequence[str], harmonics: int | Literal["auto"]) -> HarmonicFit:
    """The harmonic regression of ``frame["value"]`` on ``theta`` per series of ``factors``, and its F-tests.

    ``frame`` holds ``theta``, ``value`` and the ``factors`` (the other factors that vary, θ
    excluded). Returns the rows ``harmonics``, ``harmonics:<factor>`` for each factor and
    ``Residual`` with the ANOVA's columns ``sum_sq, df, F, p, partial_eta_sq``. Raises
    :class:`~benchsuite.analysis.anova.AnovaError` when the angles are too few for the harmonics
    or the cells leave no residual degrees of freedom.
    """
    factors = list(factors)
    data = frame[[THETA, "value", *factors]].dropna()
    thetas, theta_codes = np.unique(data[THETA].to_numpy(dtype=float), return_inverse=True)
    series_codes = data.groupby(factors, sort=True).ngroup().to_numpy() if factors else np.zeros(len(data), dtype=int)
    n_series = int(series_codes.max()) + 1
    most = min(MAX_AUTO_HARMONICS, (len(thetas) - 1) // 2) if harmonics == "auto" else harmonics
    if most < 1 or 2 * most + 1 > len(thetas):
        raise AnovaError(f"{len(thetas)} angles cannot fit {most} harmonic(s): K harmonics need at least 2K + 1 angles.")
    moments = series_moments(series_codes, theta_codes, data["value"].to_numpy(dtype=float), thetas, most)
    k = most if harmonics != "auto" else _aic_choice(moments, n_series, most)
    moments = moments.truncated(k)

    rss_full, curve_full = grouped_fit(moments, np.arange(n_series))
    df_residual = moments.n - n_series - curve_full
    if df_residual < 1:
        raise AnovaError(
            f"{moments.n} cell means for {n_series} series of {2 * k + 1} parameters leave no residual degrees of "
            "freedom: add seeds to the suite (at least 2, better 3 or more)."
        )
    rows = {}
    for term, (smaller, larger) in _nested_models(data, factors, series_codes).items():
        rss_small, params_small = grouped_fit(moments, smaller)
        rss_large, params_large = grouped_fit(moments, larger)
        rows[term] = _f_row(rss_small - rss_large, params_large - params_small, rss_full, df_residual)
    rows[RESIDUAL] = {"sum_sq": rss_full, "df": float(df_residual), "F": math.nan, "p": math.nan, "partial_eta_sq": math.nan}
    return HarmonicFit(pd.DataFrame.from_dict(rows, orient="index").rename_axis("term"), k)


def harmonic_table(
    cube: xr.Dataset, harmonics: int | Literal["auto"] = "auto", metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """:func:`harmonic_anova` of every metric's cell means, in the long form of the ANOVA table.

    Columns: those of :data:`~benchsuite.analysis.anova.TABLE_COLUMNS` (``metric, term, sum_sq,
    df, F, p, partial_eta_sq, balanced, n_per_cell``); ``attrs[HARMONICS_CHOSEN]`` maps each
    metric to its K. A metric that cannot be fitted is skipped with a warning naming it and why.
    """
    names = metric_names(cube) if metrics is None else list(metrics)
    blocks, chosen = [], {}
    for name in names:
        try:
            frame = cell_means(cube, name)
            if frame.empty:
                raise AnovaError("every cell is NaN.")
            factors = varying_factors(frame, cube_factors(cube))
            fit = harmonic_anova(frame, [f for f in factors if f != THETA], harmonics)
        except AnovaError as error:
            warnings.warn(f"harmonic regression of metric {name!r} skipped: {error}", stacklevel=2)
            continue
        balanced, n_per_cell = design_summary(frame, factors)
        block = fit.terms.reset_index()
        block.insert(0, "metric", name)
        blocks.append(block.assign(balanced=balanced, n_per_cell=n_per_cell))
        chosen[name] = fit.harmonics
    table = pd.concat(blocks, ignore_index=True)[TABLE_COLUMNS] if blocks else pd.DataFrame(columns=TABLE_COLUMNS)
    table.attrs[HARMONICS_CHOSEN] = chosen
    return table


def _nested_models(
    data: pd.DataFrame, factors: list[str], series_codes: np.ndarray
) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """Each term's pair of nested models, as :func:`grouped_fit` groupings of the series (smaller, larger).

    ``harmonics``: flat series against one shared curve; ``harmonics:<factor>``: one curve per
    combination of the other factors against one per series.
    """
    n_series = int(series_codes.max()) + 1
    per_series = np.arange(n_series)
    nested = {HARMONIC_TERM: (None, np.zeros(n_series, dtype=int))}
    for factor in factors:
        others = [f for f in factors if f != factor]
        shared = data.groupby(others, sort=True).ngroup() if others else pd.Series(0, index=data.index)
        # The group of each series: the series code and its others' code come from the same rows.
        groups = np.zeros(n_series, dtype=int)
        groups[series_codes] = shared.to_numpy()
        nested[f"{HARMONIC_TERM}:{factor}"] = (groups, per_series)
    return nested


def _aic_choice(moments: Moments, n_series: int, most: int) -> int:
    """The K in 1..``most`` whose full model (a curve per series) has the smallest AIC."""
    best, best_aic = 1, math.inf
    for k in range(1, most + 1):
        rss, curve = grouped_fit(moments.truncated(k), np.arange(n_series))
        parameters = n_series + curve
        if moments.n <= parameters or rss <= 0:
            break
        aic = moments.n * math.log(rss / moments.n) + 2 * parameters
        if aic < best_aic:
            best, best_aic = k, aic
    return best


def _f_row(sum_sq: float, df: int, rss_full: float, df_residual: int) -> dict[str, float]:
    f = (sum_sq / df) / (rss_full / df_residual) if df > 0 and rss_full > 0 else math.nan
    return {
        "sum_sq": sum_sq,
        "df": float(df),
        "F": f,
        "p": float(stats.f.sf(f, df, df_residual)) if not math.isnan(f) else math.nan,
        "partial_eta_sq": sum_sq / (sum_sq + rss_full),
    }
