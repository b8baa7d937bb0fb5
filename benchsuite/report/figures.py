"""The report's figures, drawn from the results cube alone.

Figures are built as bare :class:`matplotlib.figure.Figure` objects rather than through
``pyplot``: ``savefig`` then renders PNG with the Agg canvas whatever the session's backend is,
and no figure is registered with pyplot's global figure manager, so nothing stays open (or
leaks) after a report is written. That is matplotlib's own recipe for servers.

Every figure keeps the grid's extra factors apart: a line, panel or row is one dataset, and
also one SSP method, encoder or swept-parameter value when the suite varies those.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from scipy import stats

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.periodicity import PeriodicityError, circle_step, level_label, series_keys
from benchsuite.results.cube import (
    EXAMPLE_IMAGE,
    EXAMPLE_MASK,
    EXAMPLE_THETA,
    IDENTICAL_VIEWS,
    ORIENTATION_HIST,
    SALIENCY_EXAMPLE,
    SSP_LOSS,
    WALL_TIME,
)

STATISTICS = ["mean", "ci_low", "ci_high", "n_seeds"]
"""The columns of :func:`seed_band` after the series keys and the x axis."""

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
"""matplotlib settings for every report figure, applied while it is drawn and saved."""

DPI = 110
CONFIDENCE = 0.95
DATASET_COLOURS = colormaps["tab10"]
MANY_COLOURS = colormaps["tab20"]
LINE_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
"""Line style and marker pairs that tell apart the levels of a second series key (say, the dataset)."""
MARKED_POINTS = 40
"""A line of more points than this is drawn without markers: on a dense θ grid they merge into a thick smear."""
THETA_TICKS = 45
"""The step of the θ axis's ticks when the grid has too many angles for a tick each."""
# θ is circular, so the colour of θ must be too (0° and 330° look alike); hsv rather than
# twilight because twilight fades to white at one end of the circle, which hides a line.
THETA_COLOURS = colormaps["hsv"]
SALIENCY_COLOURS = colormaps["inferno"]
SIMILARITY_COLOURS = colormaps["viridis"]
LABELLED_CURVES = 40
"""A similarity matrix names at most this many curves on an axis (every k-th beyond that)."""
ANNOTATED_CURVES = 12
"""A similarity matrix of at most this many curves has each cell's value written in it."""
NOTE_INK = "0.1"
NOTE_BOX = {"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "0.4", "linewidth": 0.6, "alpha": 0.85}
"""Dark text on a nearly opaque light box: a note drawn over an image, readable whatever the image is."""


def _styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure under :data:`STYLE`: fonts, grids and spines are fixed when artists are created."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def seed_band(cube: xr.Dataset, metric: str, along: str = "theta") -> pd.DataFrame:
    """The mean of ``metric`` over seeds per series and value of ``along``, with its t-based 95% interval.

    ``along`` is the x axis, θ or a swept parameter; a series is one combination of the other
    grid dimensions but the seed (:func:`~benchsuite.analysis.periodicity.series_keys`, and θ
    when it is not ``along``). Each seed contributes its cell mean
    (:func:`benchsuite.analysis.anova.cell_means`, so an image-scope metric is averaged over
    images first). Columns: the series keys (``dataset, method, encoder``, ...), ``along``, then
    ``mean, ci_low, ci_high, n_seeds``; the interval is mean ± t(0.975, n - 1) · s / √n, NaN
    where a single seed has a value. Rows follow the cube's coordinate order.
    """
    keys = [key for key in (*series_keys(cube), "theta") if key != along]
    frame = cell_means(cube, metric)
    summary = frame.groupby([*keys, along], sort=False)["value"].agg(mean="mean", sd="std", n_seeds="count").reset_index()
    # The t quantile for n - 1 = 0 degrees of freedom is NaN, so one seed gives no band.
    quantile = stats.t.ppf(0.5 + CONFIDENCE / 2, summary["n_seeds"] - 1)
    half_width = quantile * summary["sd"] / np.sqrt(summary["n_seeds"])
    summary["ci_low"] = summary["mean"] - half_width
    summary["ci_high"] = summary["mean"] + half_width
    return summary[[*keys, along, *STATISTICS]]


@_styled
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
    handles = _line_panel(line_axes, band, metric, "theta", "θ (degrees)", better)
    for handle, (_, rows) in zip(handles, _series(band, "theta"), strict=True):
        closed = _closed_circle(rows)
        polar_axes.plot(
            np.deg2rad(closed["theta"]),
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


@_styled
def sweep_figure(band: pd.DataFrame, metric: str, parameter: str, label: str, better: str | None = None) -> Figure:
    """``metric`` against the swept ``parameter``, one line per series (dataset) with its confidence band.

    ``band`` is :func:`seed_band`'s frame along ``parameter``; ``label`` names it on the x axis
    (its path in the suite), and ``better`` ("higher" or "lower") goes on the y axis.
    """
    figure = Figure(figsize=(7.5, 4.6), layout="constrained")
    handles = _line_panel(figure.add_subplot(), band, metric, parameter, label, better)
    _legend(figure, handles)
    return figure


@_styled
def saliency_gallery(cube: xr.Dataset, max_angles: int = 6) -> Figure:
    """Example saliency maps: one row per dataset, one column per θ (at most ``max_angles``, spread out).

    The columns are spread over the angles that kept example maps (:func:`gallery_angles`).
    Each panel shows the first stored example image of the dataset in
    grey, the saliency map of the first seed that has one on top (each map scaled to its own
    range), and the foreground mask's outline (contour at 0.5); a panel without a map says why
    (:func:`_missing_map`). The first column shows the image and mask alone.
    """
    thetas = _spread(gallery_angles(cube), max_angles)
    rows = list(_panel_selections(cube))
    saliency = cube[SALIENCY_EXAMPLE].isel(example=0)
    angle = _map_angle(saliency)
    figure = Figure(figsize=(1.75 * (len(thetas) + 1) + 1.0, 1.75 * len(rows) + 0.6), layout="constrained")
    axes = figure.subplots(len(rows), len(thetas) + 1, squeeze=False)
    for row_axes, (label, selection) in zip(axes, rows, strict=True):
        image = _display_image(cube[EXAMPLE_IMAGE].sel(dataset=selection["dataset"]).isel(example=0))
        mask = cube[EXAMPLE_MASK].sel(dataset=selection["dataset"]).isel(example=0).values
        _show_example(row_axes[0], image, mask, None)
        row_axes[0].set_ylabel(label, fontsize=10)
        for ax, theta in zip(row_axes[1:], thetas, strict=True):
            maps = saliency.sel(selection).sel({angle: theta}).transpose("seed", ...).values
            found = [m for m in maps if np.isfinite(m).any()]
            _show_example(ax, image, mask, found[0] if found else _missing_map(cube, {**selection, "theta": theta}))
    axes[0, 0].set_title("image, mask", fontsize=10)
    for ax, theta in zip(axes[0, 1:], thetas, strict=True):
        ax.set_title(f"θ = {theta:g}°", fontsize=10)
    colourbar = figure.colorbar(ScalarMappable(Normalize(0, 1), SALIENCY_COLOURS), ax=axes, shrink=0.6, pad=0.01)
    colourbar.set_label("saliency (scaled per map)")
    return figure


def gallery_angles(cube: xr.Dataset) -> np.ndarray:
    """The angles the saliency gallery may show: those of the maps' angle dimension (:func:`_map_angle`)
    where some cell has a map or had identical views; all of them when none has either, so that the
    gallery still says why it is empty.

    A cube written before only the detailed angles kept maps stores them over every θ, NaN where
    none was kept; this picks the detailed ones out of those too. Reduced one variable at a time,
    without loading more than the first example's maps.
    """
    saliency = cube[SALIENCY_EXAMPLE].isel(example=0)
    angle = _map_angle(saliency)
    thetas = saliency[angle].values
    shown = saliency.notnull().any([dim for dim in saliency.dims if dim != angle]).values
    if IDENTICAL_VIEWS in cube:
        identical = (cube[IDENTICAL_VIEWS] == 1).any([dim for dim in cube[IDENTICAL_VIEWS].dims if dim != "theta"])
        shown |= identical.reindex(theta=thetas, fill_value=False).values
    return thetas[shown] if shown.any() else thetas


def _map_angle(saliency: xr.DataArray) -> str:
    """The dimension that holds θ in the example maps: ``example_theta``, or ``theta`` in a cube written before it."""
    return EXAMPLE_THETA if EXAMPLE_THETA in saliency.dims else "theta"


@_styled
def orientation_roses(cube: xr.Dataset) -> Figure:
    """Each dataset's gradient-orientation histogram as a rose (polar bar chart).

    Angles are counter-clockwise from +x as the image is displayed, as the cube stores them.
    All roses share one radial scale; the dashed circle is the uniform (isotropic) histogram.
    """
    histogram = cube[ORIENTATION_HIST]
    centres = np.deg2rad(cube["orientation"].values)
    width = 2 * np.pi / len(centres)
    datasets = cube["dataset"].values.tolist()
    columns = min(len(datasets), 4)
    n_rows = -(-len(datasets) // columns)
    figure = Figure(figsize=(2.9 * columns, 3.0 * n_rows + 0.2), layout="constrained")
    axes = figure.subplots(n_rows, columns, squeeze=False, subplot_kw={"projection": "polar"}).ravel()
    top = float(np.nanmax(histogram.values)) * 1.05
    uniform = 1 / len(centres)
    circle = np.linspace(0, 2 * np.pi, 181)
    for index, (ax, dataset) in enumerate(zip(axes, datasets, strict=False)):
        ax.bar(
            centres,
            histogram.sel(dataset=dataset).values,
            width=width,
            color=DATASET_COLOURS(index % DATASET_COLOURS.N),
            edgecolor="white",
            linewidth=0.4,
        )
        ax.plot(circle, np.full_like(circle, uniform), color="0.3", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, top)
        ax.set_yticklabels([])
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(dataset, fontsize=10)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    return figure


@_styled
def training_curves(cube: xr.Dataset) -> Figure:
    """SSP loss per epoch, seeds averaged: one panel per dataset, one line per θ, coloured round the circle."""
    loss = cube[SSP_LOSS].mean("seed")
    panels = list(_panel_selections(cube))
    columns = min(len(panels), 4)
    n_rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.3 * columns + 1.0, 3.1 * n_rows + 0.3), layout="constrained")
    axes = figure.subplots(n_rows, columns, squeeze=False, sharex=True)
    norm = Normalize(0, 360)
    epochs = cube["epoch"].values + 1
    thetas = cube["theta"].values
    colours = THETA_COLOURS(norm(thetas % 360))
    # One collection per panel, not one line per θ: a dense grid has thousands of angles.
    width = 1.2 if len(thetas) <= MARKED_POINTS else 0.4
    for ax, (label, selection) in zip(axes.ravel(), panels, strict=False):
        curves = loss.sel(selection).transpose("theta", "epoch").values
        segments = np.stack(np.broadcast_arrays(epochs, curves), axis=-1)  # [theta, epoch, (x, y)]
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=width))
        if np.isfinite(curves).any():
            ax.set_ylim(*_padded(np.nanmin(curves), np.nanmax(curves)))
        ax.set_xlim(epochs.min(), max(epochs.max(), epochs.min() + 1))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("SSP loss (mean over seeds)")
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    colourbar = figure.colorbar(ScalarMappable(norm, THETA_COLOURS), ax=axes, shrink=0.8, pad=0.01)
    colourbar.set_label("θ (degrees)")
    colourbar.set_ticks(np.arange(0, 361, 90))
    return figure


@_styled
def similarity_matrices(similarity: pd.DataFrame) -> Figure:
    """Per metric, a heat map of the cosine similarity between its θ-curves (signatures).

    ``similarity`` has the columns ``metric, curve_a, curve_b, cosine, l2`` (the analysis's
    ``signature_similarity`` table). A pair given once fills both of its cells, and a curve's
    similarity with itself is 1. Each panel has a colour scale of its own, fitted to its values:
    curves of a metric that is positive everywhere are all close to 1, and a scale from -1 would
    show them as one colour. Cells carry their value while the matrix is small enough to read it.
    """
    metrics = list(dict.fromkeys(similarity["metric"]))
    matrices = [_similarity_matrix(similarity[similarity["metric"] == metric]) for metric in metrics]
    side = min(8.0, 3.0 + 0.18 * max(len(matrix) for matrix in matrices))
    # Room for the curve names beside and below each matrix, about 0.07 in a character at 8 pt.
    names = 0.07 * max(len(str(name)) for matrix in matrices for name in matrix.index) + 0.3
    columns = min(len(metrics), 2)
    n_rows = -(-len(metrics) // columns)
    figure = Figure(figsize=((side * 1.25 + names) * columns, (side + names) * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, columns, squeeze=False)
    for ax, metric, matrix in zip(axes.ravel(), metrics, matrices, strict=False):
        image = ax.imshow(matrix.to_numpy(), cmap=SIMILARITY_COLOURS, interpolation="nearest")
        figure.colorbar(image, ax=ax, shrink=0.8, label="cosine similarity")
        every = max(1, -(-len(matrix) // LABELLED_CURVES))
        ticks = np.arange(0, len(matrix), every)
        ax.set_xticks(ticks, [matrix.columns[i] for i in ticks], rotation=90, fontsize=8)
        ax.set_yticks(ticks, [matrix.index[i] for i in ticks], fontsize=8)
        ax.grid(False)
        ax.set_title(metric)
        if len(matrix) <= ANNOTATED_CURVES:
            _annotate(ax, image, matrix.to_numpy())
    for ax in axes.ravel()[len(metrics) :]:
        ax.set_visible(False)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """``figure`` rendered as PNG in the report's style."""
    buffer = io.BytesIO()
    with rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


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
    elif x == "theta":
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
    varying = [key for key in keys if band[key].nunique() > 1] or ["dataset"]
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


def _panel_selections(cube: xr.Dataset) -> Iterator[tuple[str, dict[str, object]]]:
    """(label, selection) per combination of the series keys (dataset, method, encoder, swept parameters).

    The label names only the keys that vary.
    """
    keys = series_keys(cube)
    levels = [cube[key].values.tolist() for key in keys]
    varying = [key for key, names in zip(keys, levels, strict=True) if len(names) > 1] or ["dataset"]
    for combination in itertools.product(*levels):
        selection = dict(zip(keys, combination, strict=True))
        yield " / ".join(level_label(key, selection[key]) for key in varying), selection


def _radial_limits(means: pd.Series) -> tuple[float, float]:
    """Radial limits around the means: from their minimum, not from 0, or differences between θ vanish."""
    return _padded(float(means.min()), float(means.max()))


def _padded(low: float, high: float) -> tuple[float, float]:
    """Axis limits around [low, high] with room on either side, also when the two are equal."""
    pad = 0.15 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    return low - pad, high + pad


def _closed_circle(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (sorted by θ) with its first angle repeated one turn later when its angles cover the
    circle evenly (:func:`~benchsuite.analysis.periodicity.circle_step`, θ taken modulo 360°); as
    they are otherwise, so that no segment is drawn across the part of the circle that has no angle.
    """
    try:
        circle_step(np.mod(rows["theta"].to_numpy(), 360))
    except PeriodicityError:
        return rows
    return pd.concat([rows, rows.iloc[[0]].assign(theta=rows["theta"].iloc[0] + 360)], ignore_index=True)


def _spread(values: np.ndarray, count: int) -> list[float]:
    """At most ``count`` of ``values`` (sorted), evenly spread over them, first and last included."""
    ordered = np.sort(values)
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int))
    return [float(ordered[i]) for i in picks]


def _display_image(image: xr.DataArray) -> np.ndarray:
    """An example image (channel, y, x) as grey (y, x) or RGB (y, x, 3) in [0, 1]."""
    image = image.dropna("channel", how="all")
    values = image.transpose("y", "x", "channel").values
    if image.sizes["channel"] != 3:
        values = values.mean(axis=-1)
    return _unit_range(values)


def _missing_map(cube: xr.Dataset, cell: dict[str, object]) -> str:
    """Why the gallery's ``cell`` (its selection and θ, every seed) has no saliency map, in the words its panel shows."""
    if IDENTICAL_VIEWS in cube and bool((cube[IDENTICAL_VIEWS].sel(cell) == 1).any()):
        # The pipeline leaves these maps NaN on purpose: with identical views the objective is constant.
        return "identical views:\nmap undefined"
    if WALL_TIME in cube and not bool(cube[WALL_TIME].sel(cell).notnull().any()):
        return "not run"
    return "no map stored"


def _show_example(ax, image: np.ndarray, mask: np.ndarray, saliency: np.ndarray | str | None) -> None:
    """An example image with its mask's outline and, over it, ``saliency``: a map, or a note saying why there is none."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if isinstance(saliency, str):
        # The note lies on the example image, which can be anything from black to white (a
        # checkerboard is both), so it brings its own light box to stay readable on any of them.
        ax.text(0.5, 0.5, saliency, transform=ax.transAxes, ha="center", va="center", color=NOTE_INK, bbox=NOTE_BOX, fontsize=8)
    elif saliency is not None:
        ax.imshow(_unit_range(saliency), cmap=SALIENCY_COLOURS, alpha=0.6, interpolation="nearest", vmin=0, vmax=1)
    # A contour of a mask that is all foreground or all background has no level to draw.
    if np.nanmin(mask) < 0.5 < np.nanmax(mask):
        ax.contour(mask, levels=[0.5], colors="#00e5ff", linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _similarity_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """The symmetric curve × curve matrix of ``rows``' cosines, curves in order of first appearance, 1 on the diagonal.

    Curves are named by :func:`_distinct_words` of their labels.
    """
    curves = pd.Index(list(dict.fromkeys([*rows["curve_a"], *rows["curve_b"]])))
    values = np.full((len(curves), len(curves)), np.nan)
    a, b = curves.get_indexer(rows["curve_a"]), curves.get_indexer(rows["curve_b"])
    values[b, a] = rows["cosine"].to_numpy()
    values[a, b] = rows["cosine"].to_numpy()
    diagonal = np.diag_indices(len(curves))
    values[diagonal] = np.where(np.isnan(values[diagonal]), 1.0, values[diagonal])
    names = _distinct_words([str(curve) for curve in curves])
    return pd.DataFrame(values, index=names, columns=names)


def _distinct_words(labels: list[str]) -> list[str]:
    """``labels`` without the words (space-separated) that every one of them has: ``dataset=brain encoder=small_cnn``
    and ``dataset=shapes encoder=small_cnn`` become ``dataset=brain`` and ``dataset=shapes``, as a legend names only the
    keys that vary. A label that would be left empty is kept whole."""
    common = set.intersection(*(set(label.split()) for label in labels)) if labels else set()
    return [" ".join(word for word in label.split() if word not in common) or label for label in labels]


def _annotate(ax: Axes, image: AxesImage, values: np.ndarray) -> None:
    """Each cell's value in ink that stands out from its colour: dark on the light end of the map, light on the dark."""
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            light = np.mean(image.cmap(image.norm(value))[:3]) > 0.5
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="0.1" if light else "white")


def _unit_range(values: np.ndarray) -> np.ndarray:
    low, high = np.nanmin(values), np.nanmax(values)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _count_range(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"
