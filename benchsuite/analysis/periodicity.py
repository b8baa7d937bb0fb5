"""Fourier analysis of metric(θ): which periods around the circle carry the θ effect.

A rotation by θ and by θ + 360° are the same, so metric(θ) is a function on the circle and
its natural description is a Fourier series. A dataset with k-fold rotational symmetry should
put its power at the period 360°/k (90° for four-fold shapes), a texture whose gradient
orientations cluster on the axes at 90°, a mirror-symmetric one at 180°.

**Power.** For one series x_0 … x_{N-1} over N equally spaced angles, the power at harmonic h
(period 360°/h) is the fraction of the series' variance about its mean carried by the cosine
and sine of frequency h::

    power_h = c_h |X_h|² / (N Σ_n (x_n - x̄)²),   X_h = Σ_n x_n exp(-2πi h n / N),

with c_h = 2 for 0 < h < N/2 (the harmonic and its mirror image -h) and c_h = 1 at the Nyquist
harmonic h = N/2. By Parseval's theorem the powers of h = 1 … ⌊N/2⌋ sum to 1, so a power of
0.8 at 90° means four-fold variation explains 80% of how the metric varies with θ. This is
the one-sided periodogram of ``scipy.signal.periodogram`` with the mean removed, normalised by
its total. Harmonics above N/2 are not reportable: N samples cannot tell them from aliases.

**Missing angles.** Saliency metrics have no value at θ = 0 (the pair's views are identical),
so their series miss one angle of the grid. A series with at least three quarters of the grid's
angles gets the Lomb-Scargle periodogram (``scipy.signal.lombscargle``, floating mean) at the
grid's harmonics 1 … N/2, normalised to sum to 1 in the same way; on a complete grid it equals
the power above, which a test checks. Sparser series are skipped. On a dense grid (more than
``dense_above`` angles) the missing angles are filled by linear interpolation around the circle
and the FFT used instead: Lomb-Scargle costs N × N/2 terms per series (0.1 s at 3,600 angles,
minutes for the follow-up's thousand series), and a few missing angles among thousands barely
move the spectrum.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy import signal

from benchsuite.analysis.anova import cell_means
from benchsuite.results.cube import DATASET, ENCODER, METHOD, REPLICATE, THETA, grid_axes, metric_names
from benchsuite.results.errors import BenchsuiteError

PERIODS = (360.0, 180.0, 120.0, 90.0, 45.0)
"""The periods reported for every series, in degrees (harmonics 1, 2, 3, 4 and 8)."""

SERIES_KEYS = [DATASET, METHOD, ENCODER]
"""The grid dimensions that tell one metric(θ) series from another in a cube without a sweep;
:func:`series_keys` adds the swept parameters."""
POWER_COLUMNS = ["n_theta", *(f"power_{period:g}" for period in PERIODS), "dominant_period", "dominant_power"]
PERIODICITY_COLUMNS = ["metric", *SERIES_KEYS, *POWER_COLUMNS]
"""The columns of :func:`periodicity_table`; a swept parameter's column follows ``encoder``."""


def series_keys(cube: xr.Dataset) -> list[str]:
    """The grid dimensions that tell one metric(θ) series of ``cube`` from another: all but θ and the seed.

    That is :data:`SERIES_KEYS`, then the swept parameters, which keep their series apart as the
    method and the encoder do.
    """
    return [axis for axis in grid_axes(cube) if axis not in (THETA, REPLICATE)]


def series_columns(table: pd.DataFrame) -> list[str]:
    """The columns of a :func:`periodicity_table` that name its series: :func:`series_keys` of its cube."""
    return [column for column in table.columns if column not in ("metric", *POWER_COLUMNS)]


def level_label(key: str, level: object) -> str:
    """A series level as a reader reads it: a dataset, method or encoder by its name, a swept parameter as ``name=value``."""
    return str(level) if key in SERIES_KEYS else f"{key}={level}"


class PeriodicityError(BenchsuiteError, ValueError):
    """θ does not sample the circle evenly, or a series cannot be analysed; the message says why."""


def circle_step(thetas: Sequence[float]) -> float:
    """The spacing of ``thetas`` when they sample the whole circle evenly, in degrees.

    Evenly means N distinct angles in [0°, 360°), equally spaced, with N × step = 360°, so
    that the angle after the last is the first again. Raises :class:`PeriodicityError`
    otherwise, saying what is wrong.
    """
    angles = np.sort(np.asarray(thetas, dtype=float))
    if len(angles) < 3:
        raise PeriodicityError(f"θ has {len(angles)} value(s); a Fourier analysis needs at least 3 around the circle.")
    if angles[0] < 0 or angles[-1] >= 360:
        raise PeriodicityError(
            f"θ runs from {angles[0]:g}° to {angles[-1]:g}°; periodicity needs angles in [0°, 360°) "
            "(θ = 0° and 360° are the same rotation, so keep only one of them)."
        )
    steps = np.diff(angles)
    step = 360.0 / len(angles)
    if not np.allclose(steps, step, rtol=0, atol=1e-6):
        raise PeriodicityError(
            f"the {len(angles)} θ values ({_shown(angles)}) do not cover the circle evenly (that "
            f"needs a step of 360°/{len(angles)} = {step:g}°); periodicity is not analysed. "
            "Use e.g. theta: {start: 0, stop: 360, step: 30}."
        )
    return step


def harmonic_powers(series: np.ndarray) -> np.ndarray:
    """Power (fraction of variance about the mean) of harmonics 0 … ⌊N/2⌋ of an evenly sampled circle.

    Entry 0 (the mean) is always 0; the rest sum to 1. A constant series has no variance to
    share out and gives NaN everywhere but entry 0.
    """
    values = np.asarray(series, dtype=float)
    n = len(values)
    spectrum = np.abs(np.fft.rfft(values - values.mean())) ** 2
    # One-sided: every harmonic but the DC and Nyquist ones stands for itself and its mirror.
    spectrum[1 : (n + 1) // 2] *= 2
    total = spectrum.sum()
    if total <= 1e-12 * max(1.0, float(np.sum(values**2))):
        powers = np.full(len(spectrum), math.nan)
        powers[0] = 0.0
        return powers
    return spectrum / total


def gapped_harmonic_powers(thetas: np.ndarray, values: np.ndarray, n_grid: int) -> np.ndarray:
    """Like :func:`harmonic_powers` for a series observed at some of ``n_grid`` even angles (degrees)."""
    harmonics = np.arange(1, n_grid // 2 + 1, dtype=float)
    centred = np.asarray(values, dtype=float) - np.mean(values)
    spectrum = signal.lombscargle(np.deg2rad(thetas), centred, harmonics, floating_mean=True)
    total = spectrum.sum()
    powers = np.full(len(harmonics) + 1, math.nan)
    powers[0] = 0.0
    if total > 1e-12 * max(1.0, float(np.sum(centred**2))):
        powers[1:] = spectrum / total
    return powers


def periodicity(series: pd.Series, n_grid: int | None = None) -> dict[str, float]:
    """Powers at :data:`PERIODS` and the dominant period of one metric(θ) series indexed by θ.

    Returns ``{"n_theta", "power_360", ..., "power_45", "dominant_period", "dominant_power"}``.
    A period whose harmonic lies above the Nyquist harmonic N/2 has NaN power. The dominant
    period is the one with the most power among all harmonics 1 … N/2, listed or not (with 12
    angles it can be 72° or 60°). ``n_grid`` is the size of the even θ grid when the series
    misses some of its angles (then the Lomb-Scargle powers are used). Raises
    :class:`PeriodicityError` when a complete series' θ does not cover the
    circle evenly.
    """
    ordered = series.sort_index()
    n = len(ordered)
    if n_grid is None or n_grid == n:
        circle_step(ordered.index.to_numpy(dtype=float))
        n_grid = n
        powers = harmonic_powers(ordered.to_numpy(dtype=float))
    else:
        powers = gapped_harmonic_powers(ordered.index.to_numpy(dtype=float), ordered.to_numpy(dtype=float), n_grid)
    row: dict[str, float] = {"n_theta": n}
    for period in PERIODS:
        harmonic = 360.0 / period
        reportable = harmonic.is_integer() and harmonic <= n_grid // 2
        row[f"power_{period:g}"] = float(powers[int(harmonic)]) if reportable else math.nan
    if np.isnan(powers[1:]).all():
        row["dominant_period"] = row["dominant_power"] = math.nan
    else:
        dominant = 1 + int(np.nanargmax(powers[1:]))
        row["dominant_period"] = 360.0 / dominant
        row["dominant_power"] = float(powers[dominant])
    return row


def periodicity_table(cube: xr.Dataset, metrics: Sequence[str] | None = None, dense_above: int | None = None) -> pd.DataFrame:
    """The periodicity of every metric(θ) per dataset, method, encoder and swept parameter, one row per series.

    The series are the cell means (:func:`~benchsuite.analysis.anova.cell_means`) averaged over
    seeds. ``metrics`` defaults to every variable with ``role="metric"``. Columns: ``metric,
    dataset, method, encoder``, a column per swept parameter, then ``n_theta, power_360,
    power_180, power_120, power_90, power_45, dominant_period, dominant_power``.

    Raises :class:`PeriodicityError` when the cube's θ values do not cover the circle evenly: no
    metric can then be analysed. A series with values at fewer than three quarters of the angles
    is skipped with a warning naming the metric and the series; one with more gaps gets the
    Lomb-Scargle periodogram, or with more than ``dense_above`` angles is interpolated onto the
    grid (:func:`fill_circle`).
    """
    circle_step(cube[THETA].values)
    names = metric_names(cube) if metrics is None else list(metrics)
    n_theta = cube.sizes[THETA]
    keys = series_keys(cube)
    rows = []
    for name in names:
        frame = cell_means(cube, name)
        if frame.empty:
            warnings.warn(f"periodicity of metric {name!r} skipped: every cell is NaN.", stacklevel=2)
            continue
        means = frame.groupby([*keys, THETA])["value"].mean()
        for key, series in means.groupby(level=keys):
            if 4 * len(series) < 3 * n_theta:
                label = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
                warnings.warn(
                    f"periodicity of metric {name!r} skipped for ({label}): it has values at only "
                    f"{len(series)} of the {n_theta} angles (three quarters are needed).",
                    stacklevel=2,
                )
                continue
            series = series.droplevel(keys)
            if dense_above is not None and n_theta > dense_above and len(series) < n_theta:
                series = fill_circle(series, cube[THETA].values.astype(float))
            row = periodicity(series, n_theta)
            rows.append({"metric": name, **dict(zip(keys, key, strict=True)), **row})
    return pd.DataFrame(rows, columns=["metric", *keys, *POWER_COLUMNS])


def fill_circle(series: pd.Series, thetas: np.ndarray) -> pd.Series:
    """``series`` (indexed by θ in degrees) at every one of ``thetas``, missing ones interpolated linearly around the circle."""
    known = series.sort_index()
    values = np.interp(thetas, known.index.to_numpy(dtype=float), known.to_numpy(dtype=float), period=360.0)
    return pd.Series(values, index=pd.Index(thetas, name=series.index.name))


def _shown(angles: np.ndarray) -> str:
    shown = ", ".join(f"{a:g}" for a in angles[:6])
    return shown + (", ..." if len(angles) > 6 else "")
