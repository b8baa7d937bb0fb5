"""The studentized range distribution, vectorised: Tukey HSD's adjusted p-values and critical value.

Q = R / S, the range R of ``k`` standard normals over an independent S = sqrt(χ²_df / df), so

    P(Q > q) = ∫ f_df(s) G_k(q s) ds,   G_k(w) = P(R > w) = k ∫ φ(z) Φ(z)^(k-1) (1 - (1 - r)^(k-1)) dz,

with f_df the density of S and r = Φ(z - w) / Φ(z). scipy's ``studentized_range`` integrates the
same double integral adaptively, one q at a time (about 5 ms each), and its survival function
is one minus its CDF, so that a small p-value keeps only its absolute accuracy.

Here ``G_k`` is computed once per k, by a fixed Gauss–Legendre rule per w, and kept as
Chebyshev series of log G_k on short panels of w (about 50 ms); ``1 - (1 - r)^(k-1)`` goes
through ``log1p``/``expm1``, so a small G_k keeps its relative accuracy. The outer integral is a
fixed Gauss–Legendre rule per q, all the q of a family at once. Each rule spans the band where
its integrand is within :data:`_BAND` nats of its largest value, found on a coarse grid of a
cheap bound of the integrand's logarithm (both integrands are log-concave, so the band is one
interval). docs/analysis.md says how accurate it is, as the tests hold it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special

_BAND = 46.0
"""Nats below its peak past which an integrand is left out: e^-46 ≈ 1e-20, beyond the bounds' slack."""

_SCAN = 96
"""Points of the coarse grid each band is found on."""

_S_RULE = np.polynomial.legendre.leggauss(64)
_Z_RULE = np.polynomial.legendre.leggauss(128)
"""The Gauss–Legendre rules of the outer (s) and inner (z) integrals: a log-concave bump over a
46-nat band needs about 50 nodes; the inner rule runs only while a table is made, so it has more."""

_W_TOP = 40.0
"""Past this range G_k(w) < e^-380 for every k up to 1000: taken as 0, which changes no p-value above 1e-150."""

_PANEL = 0.5
_DEGREE = 20
"""The width of the table's panels of w and the degree of each panel's series: G_k to about 2e-13 relative."""

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def studentized_range_sf(q: ArrayLike, k: int, df: float) -> np.ndarray:
    """P(Q > q) for the studentized range of ``k`` means with ``df`` degrees of freedom, for every ``q``.

    Agrees with ``scipy.stats.studentized_range.sf``, as do its edges: ``q <= 0`` gives 1,
    ``inf`` 0 and NaN NaN. ``df`` is a whole number, as Tukey's error degrees of freedom are: a
    fractional one makes f_df(s) ~ s^(df-1) singular at 0, which a fixed rule integrates badly.
    """
    if k < 2 or not (df >= 1 and float(df).is_integer()):
        raise ValueError(f"the studentized range needs k >= 2 groups and a whole df >= 1, not k={k}, df={df}")
    values = np.asarray(q, dtype=float)
    flat = values.ravel()
    result = np.where(flat <= 0, 1.0, np.where(flat == np.inf, 0.0, np.nan))
    positive = (flat > 0) & np.isfinite(flat)
    if positive.any():
        result[positive] = np.clip(_sf_positive(flat[positive], k, float(df)), 0.0, 1.0)
    return result.reshape(values.shape)


@functools.lru_cache(maxsize=256)
def studentized_range_isf(alpha: float, k: int, df: float) -> float:
    """The q with ``P(Q > q) = alpha``: Tukey HSD's critical value at family-wise error rate ``alpha``.

    Cached: the families of a balanced cube share one."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, not {alpha}")

    def excess(q: float) -> float:
        return float(studentized_range_sf(q, k, df)[()]) - alpha

    high = 8.0
    while excess(high) > 0:
        high *= 2
    return optimize.brentq(excess, 0.0, high, xtol=1e-13, rtol=4 * np.finfo(float).eps)


def _sf_positive(q: np.ndarray, k: int, df: float) -> np.ndarray:
    """The outer integral, ∫ f_df(s) G_k(q s) ds, for each of ``q`` (all positive and finite)."""
    log_norm = math.log(2.0) + 0.5 * df * math.log(0.5 * df) - special.gammaln(0.5 * df)

    def log_density(s: np.ndarray) -> np.ndarray:  # log f_df(s)
        return log_norm + (df - 1.0) * np.log(s) - 0.5 * df * s * s

    # G_k(w) lies between 2Φ(-w/√2), one pair's share, and k(k-1)/2 times that (Bonferroni), so
    # this bound is within log(k(k-1)/2) of the integrand's logarithm at one log_ndtr a point.
    # The scan is in log s, as the band lies anywhere from about 1/q (G_k falls) to 1 (f_df's mode),
    # and reaches 60/df + 6 below either (f_df(s) falls as s^df), but not past f_df's own range.
    floor, top = _log_s_range(df)
    low = np.maximum(np.minimum(0.0, -np.log(q)) - 60.0 / df - 6.0, floor)[:, None]
    s_scan = np.exp(low + (top - low) * np.linspace(0.0, 1.0, _SCAN)[None, :])
    bound = log_density(s_scan) + math.log(2.0) + special.log_ndtr(-q[:, None] * s_scan / math.sqrt(2.0))
    s, weight = _rule(*_band(s_scan, bound, _BAND + math.log(k * (k - 1) / 2.0)), _S_RULE)
    return np.sum(weight * np.exp(log_density(s)) * _range_sf(q[:, None] * s, k), axis=1)


def _range_sf(w: np.ndarray, k: int) -> np.ndarray:
    """G_k(w) = P(R > w) for the range R of ``k`` standard normals, elementwise, from the table of ``k``."""
    coefficients = _range_log_sf_table(k)
    panel = np.minimum((w / _PANEL).astype(int), len(coefficients) - 1)
    x = 2.0 * (w - panel * _PANEL) / _PANEL - 1.0
    log_sf = np.polynomial.chebyshev.chebval(x, np.moveaxis(coefficients[panel], -1, 0), tensor=False)
    return np.where(w < _W_TOP, np.exp(log_sf), 0.0)


@functools.lru_cache(maxsize=64)
def _range_log_sf_table(k: int) -> np.ndarray:
    """Chebyshev coefficients of log G_k on each panel of [0, _W_TOP], one row per panel."""
    nodes = np.cos(np.pi * (np.arange(_DEGREE + 1) + 0.5) / (_DEGREE + 1))  # of the first kind, on [-1, 1]
    w = np.arange(0.0, _W_TOP, _PANEL)[:, None] + _PANEL * (nodes[None, :] + 1.0) / 2.0
    values = np.log(_range_sf_quadrature(w.ravel(), k)).reshape(w.shape)
    return np.linalg.solve(np.polynomial.chebyshev.chebvander(nodes, _DEGREE), values.T).T


def _range_sf_quadrature(w: np.ndarray, k: int) -> np.ndarray:
    """G_k(w) for each of ``w`` (1-D, positive) by the inner integral over z."""

    def log_head(z: np.ndarray) -> np.ndarray:  # log k φ(z) Φ(z)^(k-1)
        return math.log(k) - 0.5 * z * z - _LOG_SQRT_2PI + (k - 1) * special.log_ndtr(z)

    def log_ratio(z: np.ndarray) -> np.ndarray:  # log r
        return special.log_ndtr(z - w[:, None]) - special.log_ndtr(z)

    # 1 - (1 - r)^(k-1) lies between (1 - 1/e) min(1, (k-1) r) and min(1, (k-1) r): the bound
    # scanned. The band sits in the top of the largest of k normals for a small w and near w/2,
    # where the two extremes meet, for a large one.
    half = w[:, None] / 2.0
    z_scan = half - 10.0 + (20.0 + half) * np.linspace(0.0, 1.0, _SCAN)[None, :]
    bound = log_head(z_scan) + np.minimum(0.0, math.log(k - 1) + log_ratio(z_scan))
    z, weight = _rule(*_band(z_scan, bound, _BAND + 1.0), _Z_RULE)
    ratio = np.minimum(np.exp(log_ratio(z)), 1.0)
    with np.errstate(divide="ignore"):  # r rounds to 1 where Φ(z - w) does: log1p(-1) = -inf, the factor 1
        spread = -np.expm1((k - 1) * np.log1p(-ratio))  # 1 - (1 - r)^(k-1), exact for a small r too
    return np.sum(weight * np.exp(log_head(z)) * spread, axis=1)


def _band(grid: np.ndarray, log_bound: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the interval of ``grid`` where ``log_bound`` is within ``depth`` of the row's largest value.

    Widened by a grid step each way, so that it holds all of a concave ``log_bound``'s band, not
    only the grid's points in it."""
    inside = log_bound >= log_bound.max(axis=1, keepdims=True) - depth
    n = grid.shape[1]
    first = np.maximum(inside.argmax(axis=1) - 1, 0)
    last = np.minimum(n - inside[:, ::-1].argmax(axis=1), n - 1)
    rows = np.arange(grid.shape[0])
    return grid[rows, first], grid[rows, last]


def _rule(lo: np.ndarray, hi: np.ndarray, rule: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The nodes and weights of the Gauss–Legendre ``rule`` moved onto each ``[lo, hi]``, one row per interval."""
    x, weight = rule
    half = (hi - lo)[:, None] / 2.0
    return lo[:, None] + half * (x + 1.0)[None, :], half * weight[None, :]


@functools.lru_cache(maxsize=64)
def _log_s_range(df: float) -> tuple[float, float]:
    """The log s below which the density of log S is under e^-420 of its mode (at s = 1), and above which under e^-60.

    Below, the band of a p-value down to 1e-150 still lies inside; above, the scan has nothing to find.
    On a large df the range is narrow (S is about 1), and the scan finds the band only within it."""

    def drop(u: float) -> float:  # log of s f_df(s) at s = e^u, less its value at s = 1
        return df * (u - 0.5 * math.expm1(2.0 * u))

    floor = optimize.brentq(lambda u: drop(u) + 420.0, -420.0 / df - 1.0, 0.0)
    top = optimize.brentq(lambda u: drop(u) + 60.0, 0.0, 0.5 * math.log1p(120.0 / df) + 1.0)
    return floor, top
