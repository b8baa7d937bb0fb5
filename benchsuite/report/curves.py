"""The report's metric curves: a metric's mean over seeds with its confidence band, against θ (on a line and on
the circle) or against a swept parameter.

Every figure keeps the grid's extra factors apart: a line is one dataset, and also one SSP
method, encoder or swept-parameter value when the suite varies those. Figures are drawn as
:mod:`benchsuite.report.style` says.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from scipy import stats

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.periodicity import PeriodicityError, circle_step, level_label, series_keys
from benchsuite.report.style import DATASET_COLOURS, MARKED_POINTS, NOTE_BOX, NOTE_INK, padded, styled
from benchsuite.results.cube import DATASET, THETA

STATISTICS = ["mean", "ci_low", "ci_high", "n_seeds"]
"""The columns of :func:`seed_band` after the series keys and the x axis."""

CONFIDENCE = 0.95
MANY_COLOURS = colormaps["tab20"]
LINE_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
"""Line style and marker pairs that tell apart the levels of a second series key (say, the dataset)."""
THETA_TICKS = 45
"""The step of the θ axis's ticks when the grid has too many angles for a tick each."""


def seed_band(cube: xr.Dataset, metric: str, along: str = THETA) -> pd.DataFrame:
    """The mean of ``metric`` over seeds per series and value of ``along``, with its t-based 95% interval.

    ``along`` is the x axis, θ or a swept parameter; a series is one combination of the other
    grid dimensions but the seed (:func:`~benchsuite.analysis.periodicity.series_keys`, and θ
    when it is not ``along``). Each seed contributes its cell mean
    (:func:`benchsuite.analysis.anova.cell_means`, so an image-scope metric is averaged over
    images first). Columns: the series keys (``dataset, method, encoder``, ...), ``along``, then
    ``mean, ci_low, ci_high, n_seeds``; the interval is mean ± t(0.975, n - 1) · s / √n, NaN
    where a single seed has a value. Rows follow the cube's coordinate order.
    """
    keys = [key for key in (*series_keys(cube), THETA) if key != along]
    frame = cell_means(cube, metric)
    summary = frame.groupby([*keys, along], sort=False)["value"].agg(mean="mean", sd="std", n_seeds="count").reset_index()
    # The t quantile for n - 1 = 0 degrees of freedom is NaN, so one seed gives no band.
    quantile = stats.t.ppf(0.5 + CONFIDENCE / 2, summary["n_seeds"] - 1)
    half_width = quantile * summary["sd"] / np.sqrt(summary["n_seeds"])
    summary["ci_low"] = summary["mean"] - half_width
    summary["ci_high"] = summary["mean"] + half_width
    return summary[[*keys, along, *STATISTICS]]


@styled
def interaction_figure(band: pd.DataFrame, metric: str, better: str | None = None) -> Figure:
    """``metric`` against θ, one line per series with its confidence band, on a line and on a circle.

    ``band`` is :func:`seed_band`'s frame; ``better`` ("higher" or "lower") goes on the y axis.
    The polar panel shows the means only (a band round the whole circle hides the shape it is
    there to show), its radial axis fitted to them. A curve whose angles cover the circle evenly
    is closed by repeating its first angle one turn later, since θ is circular (θ = 0 is also
    θ = 360); any other is left open rather than joined across the part of the circle that has no
    angle.
    """
    figure = Figure(figsize=(11, 4.6), layout="constrained")
    grid = figure.add_gridspec(1, 2, width_ratios=[1.75, 1])
    line_axes = figure.add_subplot(grid[0])
    polar_axes = figure.add_subplot(grid[1], projection="polar")
    handles = _line_panel(line_axes, band, metric, THETA, "θ (degrees)", better)
    for handle, (_, rows) in zip(handles, _series(band, THETA), strict=True):
        closed = _closed_circle(rows)
        polar_axes.plot(
            np.deg2rad(closed[THETA]),
            closed["mean"],
            color=handle.get_color(),
            linestyle=handle.get_linestyle(),
            marker=handle.get_marker(),
            markersize=3,
            linewidth=1.0 if len(closed) > MARKED_POINTS else 1.5,
        )
    polar_axes.set_ylim(*_radial_limits(band["mean"]))
    polar_axes.yaxis.set_major_locator(MaxNLocator(4))
    # The line panel names the metric; a long name here would run off the figure.
    polar_axes.set_title("the means on the circle of θ", pad=18)
    polar_axes.tick_params(axis="y", labelsize=8)
    _legend(figure, handles)
    return figure


@styled
def sweep_figure(band: pd.DataFrame, metric: str, parameter: str, label: str, better: str | None = None) -> Figure:
    """``metric`` against the swept ``parameter``, one line per series (dataset) with its confidence band.

    ``band`` is :func:`seed_band`'s frame along ``parameter``; ``label`` names it on the x axis
    (its path in the suite), and ``better`` ("higher" or "lower") goes on the y axis.
    """
    figure = Figure(figsize=(7.5, 4.6), layout="constrained")
    handles = _line_panel(figure.add_subplot(), band, metric, parameter, label, better)
    _legend(figure, handles)
    return figure


def _line_panel(axes: Axes, band: pd.DataFrame, metric: str, x: str, x_label: str, better: str | None) -> list[Line2D]:
    """Draw each series of :func:`seed_band`'s frame against its column ``x`` with its band; return the legend handles."""
    handles = []
    styles = _series_styles(band, x)
    # Bands of many series pile up into one shade: each gets fainter so that the lines stay legible.
    shade = min(0.15, 0.6 / len(styles))
    dense = band.groupby([c for c in band.columns if c not in (x, *STATISTICS)], sort=False).size().max() > MARKED_POINTS
    for (label, rows), (colour, linestyle, marker) in zip(_series(band, x), styles, strict=True):
        style = {"color": colour, "linestyle": linestyle, "marker": "" if dense else marker, "markersize": 4}
        axes.plot(rows[x], rows["mean"], **style)
        axes.fill_between(rows[x], rows["ci_low"], rows["ci_high"], color=colour, alpha=shade, linewidth=0)
        handles.append(Line2D([], [], label=label, **style))
    low, high, cut = _band_limits(band) if band["mean"].notna().any() else (None, None, False)
    axes.set_ylim(low, high)
    if cut:
        note = "some bands run past the axis"
        axes.text(0.99, 0.98, note, transform=axes.transAxes, ha="right", va="top", color=NOTE_INK, bbox=NOTE_BOX, fontsize=8)
    values = np.unique(band[x])
    # A categorical axis (string values) already has a tick per label.
    if pd.api.types.is_numeric_dtype(band[x]) and len(values) <= 16:
        axes.set_xticks(values)
    elif x == THETA:
        axes.set_xticks(np.arange(np.ceil(values[0] / THETA_TICKS), np.floor(values[-1] / THETA_TICKS) + 1) * THETA_TICKS)
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"{metric} ({better} is better)" if better else metric)
    n_seeds = _count_range(band["n_seeds"])
    axes.set_title(f"{metric}: mean over seeds, {CONFIDENCE:.0%} CI (t, n = {n_seeds} seeds)", loc="left")
    return handles


def _legend(figure: Figure, handles: list[Line2D]) -> None:
    """The legend below the figure, in as many columns (up to 6) as the figure's width holds."""
    # About 0.09 in per character of a 10 pt label, and 0.7 in for its marker and the gap after it:
    # labels that name a swept value as well as the dataset would otherwise run off the sides.
    width = 0.09 * max(len(handle.get_label()) for handle in handles) + 0.7
    fits = int(figure.get_figwidth() / width)
    figure.legend(handles=handles, loc="outside lower center", ncols=max(1, min(len(handles), 6, fits)))


def _series(band: pd.DataFrame, x: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """(label, rows) per line of :func:`seed_band`'s frame along ``x``; the label names only the keys that vary.

    Numbers run in order along the axis; labels (a swept parameter's strings) keep the suite's
    order, in which the cube and so the band hold them.
    """
    keys = [column for column in band.columns if column not in (x, *STATISTICS)]
    varying = [key for key in keys if band[key].nunique() > 1] or [DATASET]
    numeric = pd.api.types.is_numeric_dtype(band[x])
    for key, rows in band.groupby(keys, sort=False):
        levels = dict(zip(keys, key, strict=True))
        yield " / ".join(level_label(k, levels[k]) for k in varying), rows.sort_values(x) if numeric else rows


def _series_styles(band: pd.DataFrame, x: str) -> list[tuple[object, str, str]]:
    """(colour, line style, marker) per series of :func:`_series`, in its order.

    With one varying key each series gets a colour of its own. With more (datasets and methods,
    say), the key with the fewest levels is drawn by line style and marker and the rest by
    colour, so that a reader follows one method across datasets, and more series than a palette
    has colours stay apart.
    """
    keys = [column for column in band.columns if column not in (x, *STATISTICS)]
    groups = [dict(zip(keys, key, strict=True)) for key, _ in band.groupby(keys, sort=False)]
    varying = [key for key in keys if band[key].nunique() > 1]
    styled = min(varying, key=lambda key: band[key].nunique()) if len(varying) > 1 else None
    coloured = [tuple(levels[key] for key in varying if key != styled) for levels in groups]
    colours = list(dict.fromkeys(coloured))
    palette = DATASET_COLOURS if len(colours) <= DATASET_COLOURS.N else MANY_COLOURS
    styles = list(dict.fromkeys(levels[styled] for levels in groups)) if styled else []
    result = []
    for levels, colour_key in zip(groups, coloured, strict=True):
        linestyle, marker = LINE_STYLES[styles.index(levels[styled]) % len(LINE_STYLES)] if styled else LINE_STYLES[0]
        result.append((palette(colours.index(colour_key) % palette.N), linestyle, marker))
    return result


def _band_limits(band: pd.DataFrame) -> tuple[float, float, bool]:
    """y limits that hold every mean and as much of the bands as stays readable; whether a band is cut.

    A band may widen the axis by at most half the means' own range on either side: with two or
    three seeds a t interval can be many times wider than the differences the figure is there to
    show (t(0.975, 1) is 12.7), and an axis fitted to it flattens every line.
    """
    low, high = float(band["mean"].min()), float(band["mean"].max())
    span = high - low if high > low else max(abs(high), 1.0) * 0.1
    lowest, highest = band["ci_low"].min(), band["ci_high"].max()
    lowest = low if pd.isna(lowest) else min(float(lowest), low)
    highest = high if pd.isna(highest) else max(float(highest), high)
    floor, ceiling = low - span / 2, high + span / 2
    pad = 0.05 * span
    return max(lowest, floor) - pad, min(highest, ceiling) + pad, lowest < floor or highest > ceiling


def _radial_limits(means: pd.Series) -> tuple[float, float]:
    """Radial limits around the means: from their minimum, not from 0, or differences between θ vanish."""
    return padded(float(means.min()), float(means.max()))


def _closed_circle(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (sorted by θ) with its first angle repeated one turn later when its angles cover the
    circle evenly (:func:`~benchsuite.analysis.periodicity.circle_step`, θ taken modulo 360°); as
    they are otherwise, so that no segment is drawn across the part of the circle that has no angle.
    """
    try:
        circle_step(np.mod(rows[THETA].to_numpy(), 360))
    except PeriodicityError:
        return rows
    return pd.concat([rows, rows.iloc[[0]].assign(**{THETA: rows[THETA].iloc[0] + 360})], ignore_index=True)


def _count_range(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"
