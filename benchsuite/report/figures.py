"""The report's figures beside the metric curves: the saliency gallery, the gradient-orientation roses, the
training curves and the signature similarity matrices.

Every figure keeps the grid's extra factors apart: a panel or row is one dataset, and also one
SSP method, encoder or swept-parameter value when the suite varies those. Figures are drawn as
:mod:`benchsuite.report.style` says.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from benchsuite.analysis.periodicity import level_label, series_keys
from benchsuite.report.style import DATASET_COLOURS, MARKED_POINTS, NOTE_BOX, NOTE_INK, padded, styled
from benchsuite.results.cube import (
    CHANNEL,
    DATASET,
    EPOCH,
    EXAMPLE_IMAGE,
    EXAMPLE_INDEX,
    EXAMPLE_MASK,
    EXAMPLE_THETA,
    IDENTICAL_VIEWS,
    ORIENTATION,
    ORIENTATION_HIST,
    SALIENCY_EXAMPLE,
    SEED,
    SSP_LOSS,
    THETA,
    WALL_TIME,
    X,
    Y,
)

# θ is circular, so the colour of θ must be too (0° and 330° look alike); hsv rather than
# twilight because twilight fades to white at one end of the circle, which hides a line.
THETA_COLOURS = colormaps["hsv"]
SALIENCY_COLOURS = colormaps["inferno"]
SIMILARITY_COLOURS = colormaps["viridis"]
LABELLED_CURVES = 40
"""A similarity matrix names at most this many curves on an axis (every k-th beyond that)."""
ANNOTATED_CURVES = 12
"""A similarity matrix of at most this many curves has each cell's value written in it."""


@styled
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
    saliency = cube[SALIENCY_EXAMPLE].isel({EXAMPLE_INDEX: 0})
    angle = _map_angle(saliency)
    figure = Figure(figsize=(1.75 * (len(thetas) + 1) + 1.0, 1.75 * len(rows) + 0.6), layout="constrained")
    axes = figure.subplots(len(rows), len(thetas) + 1, squeeze=False)
    for row_axes, (label, selection) in zip(axes, rows, strict=True):
        image = _display_image(cube[EXAMPLE_IMAGE].sel({DATASET: selection[DATASET]}).isel({EXAMPLE_INDEX: 0}))
        mask = cube[EXAMPLE_MASK].sel({DATASET: selection[DATASET]}).isel({EXAMPLE_INDEX: 0}).values
        _show_example(row_axes[0], image, mask, None)
        row_axes[0].set_ylabel(label, fontsize=10)
        for ax, theta in zip(row_axes[1:], thetas, strict=True):
            maps = saliency.sel(selection).sel({angle: theta}).transpose(SEED, ...).values
            found = [m for m in maps if np.isfinite(m).any()]
            _show_example(ax, image, mask, found[0] if found else _missing_map(cube, {**selection, THETA: theta}))
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
    saliency = cube[SALIENCY_EXAMPLE].isel({EXAMPLE_INDEX: 0})
    angle = _map_angle(saliency)
    thetas = saliency[angle].values
    shown = saliency.notnull().any([dim for dim in saliency.dims if dim != angle]).values
    if IDENTICAL_VIEWS in cube:
        identical = (cube[IDENTICAL_VIEWS] == 1).any([dim for dim in cube[IDENTICAL_VIEWS].dims if dim != THETA])
        shown |= identical.reindex({THETA: thetas}, fill_value=False).values
    return thetas[shown] if shown.any() else thetas


def _map_angle(saliency: xr.DataArray) -> str:
    """The dimension that holds θ in the example maps: ``example_theta``, or ``theta`` in a cube written before it."""
    return EXAMPLE_THETA if EXAMPLE_THETA in saliency.dims else THETA


@styled
def orientation_roses(cube: xr.Dataset) -> Figure:
    """Each dataset's gradient-orientation histogram as a rose (polar bar chart).

    Angles are counter-clockwise from +x as the image is displayed, as the cube stores them.
    All roses share one radial scale; the dashed circle is the uniform (isotropic) histogram.
    """
    histogram = cube[ORIENTATION_HIST]
    centres = np.deg2rad(cube[ORIENTATION].values)
    width = 2 * np.pi / len(centres)
    datasets = cube[DATASET].values.tolist()
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
            histogram.sel({DATASET: dataset}).values,
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


@styled
def training_curves(cube: xr.Dataset) -> Figure:
    """SSP loss per epoch, seeds averaged: one panel per dataset, one line per θ, coloured round the circle."""
    loss = cube[SSP_LOSS].mean(SEED)
    panels = list(_panel_selections(cube))
    columns = min(len(panels), 4)
    n_rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.3 * columns + 1.0, 3.1 * n_rows + 0.3), layout="constrained")
    axes = figure.subplots(n_rows, columns, squeeze=False, sharex=True)
    norm = Normalize(0, 360)
    epochs = cube[EPOCH].values + 1
    thetas = cube[THETA].values
    colours = THETA_COLOURS(norm(thetas % 360))
    # One collection per panel, not one line per θ: a dense grid has thousands of angles.
    width = 1.2 if len(thetas) <= MARKED_POINTS else 0.4
    for ax, (label, selection) in zip(axes.ravel(), panels, strict=False):
        curves = loss.sel(selection).transpose(THETA, EPOCH).values
        segments = np.stack(np.broadcast_arrays(epochs, curves), axis=-1)  # [theta, epoch, (x, y)]
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=width))
        if np.isfinite(curves).any():
            ax.set_ylim(*padded(np.nanmin(curves), np.nanmax(curves)))
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


@styled
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


def _panel_selections(cube: xr.Dataset) -> Iterator[tuple[str, dict[str, object]]]:
    """(label, selection) per combination of the series keys (dataset, method, encoder, swept parameters).

    The label names only the keys that vary.
    """
    keys = series_keys(cube)
    levels = [cube[key].values.tolist() for key in keys]
    varying = [key for key, names in zip(keys, levels, strict=True) if len(names) > 1] or [DATASET]
    for combination in itertools.product(*levels):
        selection = dict(zip(keys, combination, strict=True))
        yield " / ".join(level_label(key, selection[key]) for key in varying), selection


def _spread(values: np.ndarray, count: int) -> list[float]:
    """At most ``count`` of ``values`` (sorted), evenly spread over them, first and last included."""
    ordered = np.sort(values)
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int))
    return [float(ordered[i]) for i in picks]


def _display_image(image: xr.DataArray) -> np.ndarray:
    """An example image (channel, y, x) as grey (y, x) or RGB (y, x, 3) in [0, 1]."""
    image = image.dropna(CHANNEL, how="all")
    values = image.transpose(Y, X, CHANNEL).values
    if image.sizes[CHANNEL] != 3:
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
