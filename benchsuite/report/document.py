"""The report as one page: its sections (the figures, the ANOVA tables and readings, the further tables, the
provenance) put together and written.

:func:`write_report` reads the cube and the analysis tables, draws the figures, saves each as
PNG under ``figures/``, and writes ``report.html`` with the same PNGs inline.
:func:`analysis_tables` gives it the tables ``benchsuite analyze`` wrote, or runs the analysis
(and writes them) when there are none that match the cube.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from benchsuite.analysis.anova import SS_TYPE, anova_heading
from benchsuite.analysis.summary import (
    SUMMARY_NAME,
    TABLE_NAMES,
    WARNINGS,
    analyze_cube,
    read_tables,
    skipped_analyses,
    skipped_note,
    write_tables,
)
from benchsuite.report import curves, figures
from benchsuite.report.html import FigureImage, Table, render_page, table
from benchsuite.report.provenance import provenance
from benchsuite.report.readings import ANOVA_FORMATS, Reading, interaction_reading, outcome_notes, term_label, varying_terms
from benchsuite.report.style import png_bytes
from benchsuite.results.cube import (
    CUBE_NAME,
    DATASET,
    ENCODER,
    EXAMPLE_IMAGE,
    EXAMPLE_MASK,
    METHOD,
    ORIENTATION_HIST,
    PATH,
    SALIENCY_EXAMPLE,
    SEED,
    SSP_LOSS,
    SUITE_DESCRIPTION,
    SUITE_NAME,
    THETA,
    WALL_TIME,
    better,
    grid_axes,
    metric_names,
    outcome,
    swept,
)

REPORT_NAME = "report.html"
FIGURES_DIR = "figures"
SHOWN_ROWS = 200
"""A table shows at most this many rows on the page, so that the page stays small on a dense grid
(the orientation autocorrelation of 3,600 angles has 3,600 rows per dataset); its CSV file has them all."""
SIGNATURES = "signature_similarity"
"""The analysis table the signature similarity figure is drawn from: metric, curve_a, curve_b, cosine, l2."""

ANOVA_LABELS = {"sum_sq": "sum of squares", "partial_eta_sq": "partial η²"}

ANALYSIS_HEADINGS = {
    "mixed": "Mixed model: evaluation image and training run as random effects",
    "periodicity": "Periodicity of metric(θ)",
    "tukey": "Post hoc: which θ differ within a dataset (Tukey HSD)",
    "orientation_autocorr": "Gradient-orientation autocorrelation c(θ) per dataset",
    "covariate": "Covariate: does c(θ) predict the metric?",
    SIGNATURES: "Signature similarity: pairwise cosine and L2 between θ-curves",
    "compare": "Comparison with another run (A: the other run; B: this one; B - A across seeds)",
}
"""Headings of the analysis tables the report knows; any other table is headed by its key."""


@dataclass(frozen=True)
class MetricSection:
    """One metric: its interaction figure, and its ANOVA table and readings (one per study term) when an ANOVA was given."""

    name: str
    figure: FigureImage | None
    readings: list[Reading] = field(default_factory=list)
    anova: Table | None = None
    design: str = ""


@dataclass(frozen=True)
class TableSection:
    """A further analysis table: notes above it, the warnings its analysis raised, and how many rows it has in all."""

    anchor: str
    heading: str
    table: Table
    notes: Sequence[str] = ()
    warnings: Sequence[str] = ()
    rows_in_all: int = 0
    file_name: str = ""


@dataclass(frozen=True)
class FigureSection:
    anchor: str
    heading: str
    figure: FigureImage | None
    missing: str


@dataclass(frozen=True)
class _Drawing:
    """A whole-cube figure: where it goes, what it needs from the cube, how it is drawn and described."""

    anchor: str
    heading: str
    needs: tuple[str, ...]
    draw: Callable[[xr.Dataset], Figure]
    file_name: str
    alt: str
    caption: str


_DRAWINGS = (
    _Drawing("saliency", "Saliency gallery", (SALIENCY_EXAMPLE, EXAMPLE_IMAGE, EXAMPLE_MASK),
             figures.saliency_gallery, "saliency_gallery.png", "saliency maps per dataset and θ",
             "Rows: datasets; columns: θ, spread over the angles whose cells kept example maps. Grey: the first "
             "stored evaluation image; colour: its saliency map for the first seed that has one, scaled to its own "
             "range; cyan line: the foreground mask (contour at 0.5). A panel without a map says why: the cell's "
             "two views were identical, so its map is undefined (θ = 0 for a rotation), it was not run, or it kept "
             "no example."),
    _Drawing("orientation", "Gradient orientations", (ORIENTATION_HIST,), figures.orientation_roses,
             "orientation_roses.png", "gradient-orientation rose per dataset",
             "Magnitude-weighted gradient-orientation histogram per dataset, counter-clockwise from +x as "
             "displayed; dashed circle: a uniform (isotropic) histogram."),
    _Drawing("training", "Training curves", (SSP_LOSS,), figures.training_curves, "training_curves.png",
             "SSP loss per epoch for every θ, per dataset",
             "Self-supervised pre-training loss per epoch, mean over seeds; one line per θ, coloured round the circle."),
)  # fmt: skip


def write_report(
    cube: xr.Dataset, tables: Mapping[str, pd.DataFrame], out_dir: Path, *, notes: Mapping[str, Sequence[str]] | None = None
) -> Path:
    """Write ``out_dir/report.html`` and its figures as PNG under ``out_dir/figures/``; return the page's path.

    ``tables`` holds the analysis of the cube by name. ``"anova"`` is the long-form table of
    :func:`benchsuite.analysis.anova.anova_table`: it gives each metric its ANOVA table and the
    reading of each study interaction the cube varies (:func:`varying_terms`). Every other table
    is shown as it is, in the order given, below the lines ``notes`` holds for it (a
    comparison's runs and what differs between them, say). A table whose analysis was skipped (see
    :func:`benchsuite.analysis.summary.analyze_cube`) gets no section; the summary says once why
    it was skipped. A table shows the warnings its analysis raised (``attrs[WARNINGS]``: why it
    is empty, or lacks a metric) and at most :data:`SHOWN_ROWS` rows. The ``signature_similarity``
    table, when it has rows, is also drawn as a heat map per metric. The page is self-contained
    (figures inline, no script, no network access).
    """
    out_dir = Path(out_dir)
    skipped = skipped_analyses(tables)
    anova = None if "anova" in skipped else tables.get("anova")
    terms = varying_terms(cube)
    chosen = outcome(cube)
    # The outcome first, the diagnostics after it in cube order.
    ordered = sorted(metric_names(cube), key=lambda name: name != chosen)
    metrics = [_metric_section(cube, name, anova, terms) for name in ordered]
    analyses = [
        _table_section(key, frame, terms, (notes or {}).get(key, ()))
        for key, frame in tables.items()
        if key != "anova" and key not in skipped
    ]
    signatures = tables.get(SIGNATURES)
    drawn = [_signature_section(signatures)] if signatures is not None and len(signatures) else []
    drawn += [_figure_section(cube, drawing) for drawing in _DRAWINGS]

    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    for image in [m.figure for m in metrics] + [d.figure for d in drawn]:
        if image is not None:
            (figures_dir / image.file_name).write_bytes(image.png)

    labels = [term_label(term) for term in terms]
    interaction_heading = f"{' and '.join(labels)} interaction{'s' if len(labels) > 1 else ''}, per metric"
    contents = (
        [("summary", "Summary"), ("interaction", interaction_heading)]
        + [(section.anchor, section.heading) for section in [*analyses, *drawn]]
        + [("provenance", "Provenance")]
    )
    page = render_page(
        title=f"benchsuite report: {cube.attrs.get(SUITE_NAME, 'suite')}",
        description=cube.attrs.get(SUITE_DESCRIPTION, ""),
        grid_text=_grid_text(cube),
        contents=contents,
        interaction_labels=labels,
        interaction_heading=interaction_heading,
        on_circle=_plotted_against(cube) == THETA,
        metrics=metrics,
        anova_given="anova" in tables,
        anova_heading="" if anova is None else anova_heading(anova),
        skipped_note=skipped_note(tables),
        outcome=chosen,
        outcome_notes=outcome_notes(cube),
        analyses=analyses,
        figure_sections=drawn,
        provenance=provenance(cube),
    )
    path = out_dir / REPORT_NAME
    # Written beside and renamed, so a browser or a copy never sees half a report.
    partial = path.with_name(f".{REPORT_NAME}.tmp{os.getpid()}")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path


def analysis_tables(run_dir: Path, cube: xr.Dataset, *, typ: Literal[2, 3] = 2) -> dict[str, pd.DataFrame]:
    """The analysis of ``run_dir``'s ``cube``: the tables ``benchsuite analyze`` wrote there, when every one of
    them is there, none is older than the cube and the ANOVA has type ``typ``; otherwise the
    analysis is run and its tables written, so that it runs once and not for every report.
    """
    run_dir = Path(run_dir)
    files = [run_dir / SUMMARY_NAME, *(run_dir / f"{name}.csv" for name in TABLE_NAMES)]
    if all(file.is_file() for file in files):
        written = min(file.stat().st_mtime_ns for file in files)
        if written >= _modified_ns(run_dir / CUBE_NAME):
            tables = read_tables(run_dir)
            if tables["anova"].attrs.get(SS_TYPE, typ) == typ:
                return tables
    tables = analyze_cube(cube, typ=typ)
    write_tables(cube, tables, run_dir)
    return tables


def _metric_section(cube: xr.Dataset, metric: str, anova: pd.DataFrame | None, terms: list[str]) -> MetricSection:
    image = _interaction_image(cube, metric)
    if anova is None:
        return MetricSection(metric, image)
    rows = anova[anova["metric"] == metric]
    if rows.empty:
        return MetricSection(metric, image, [interaction_reading(anova, metric)])
    first = rows.iloc[0]
    return MetricSection(
        metric,
        image,
        [interaction_reading(anova, metric, term) for term in terms],
        table(
            rows[["term", *ANOVA_FORMATS]],
            ANOVA_FORMATS,
            ANOVA_LABELS,
            highlight=lambda row: row["term"] in terms,
        ),
        f"{'balanced' if first['balanced'] else 'unbalanced'}, {first['n_per_cell']} observations per cell",
    )


def _interaction_image(cube: xr.Dataset, metric: str) -> FigureImage | None:
    """The metric's main figure: against θ, or against the swept parameter when θ has a single level; None without values."""
    along = _plotted_against(cube)
    band = curves.seed_band(cube, metric, along)
    if band.empty:
        return None
    file_name = f"interaction_{_slug(metric)}.png"
    if along == THETA:
        return _image(
            curves.interaction_figure(band, metric, better(cube, metric)),
            file_name,
            f"{metric} against θ per dataset, on a line and on a circle",
            f"{metric} against θ, one line per dataset: mean over seeds with its 95% confidence band; "
            "right, the means on the circle of θ (radial axis fitted to them).",
        )
    path = cube[along].attrs[PATH]
    return _image(
        curves.sweep_figure(band, metric, along, path, better(cube, metric)),
        file_name,
        f"{metric} against {path} per dataset",
        f"{metric} against {path}, one line per dataset: mean over seeds with its 95% confidence band.",
    )


def _plotted_against(cube: xr.Dataset) -> str:
    """θ, unless θ has a single level and a swept parameter varies: then the first such parameter."""
    varying = [dim for dim in swept(cube) if cube.sizes[dim] > 1]
    return varying[0] if varying and cube.sizes[THETA] == 1 else THETA


def _table_section(key: str, frame: pd.DataFrame, terms: list[str], notes: Sequence[str]) -> TableSection:
    """A further analysis table as it is, its first :data:`SHOWN_ROWS` rows; the rows of ``terms`` are highlighted
    wherever a table has terms."""
    frame = frame.reset_index() if _has_named_index(frame) else frame
    return TableSection(
        f"analysis-{_slug(key)}",
        ANALYSIS_HEADINGS.get(key, key.replace("_", " ").capitalize()),
        table(frame.head(SHOWN_ROWS), highlight=lambda row: row.get("term") in terms),
        notes,
        frame.attrs.get(WARNINGS, ()),
        len(frame),
        f"{key}.csv" if key in TABLE_NAMES else "",
    )


def _signature_section(similarity: pd.DataFrame) -> FigureSection:
    return FigureSection(
        "signatures",
        "Signature similarity",
        _image(
            figures.similarity_matrices(similarity),
            "signature_similarity.png",
            "cosine similarity between θ-curves, per metric",
            "Per metric, the cosine similarity between the θ-curves (signatures) of each pair of curves; "
            "each metric has a colour scale of its own.",
        ),
        "",
    )


def _figure_section(cube: xr.Dataset, drawing: _Drawing) -> FigureSection:
    missing = [name for name in drawing.needs if name not in cube]
    image = None if missing else _image(drawing.draw(cube), drawing.file_name, drawing.alt, drawing.caption)
    return FigureSection(
        drawing.anchor, drawing.heading, image, f"The cube has no {', '.join(missing)}, so there is nothing to draw."
    )


def _grid_text(cube: xr.Dataset) -> str:
    sizes = {axis: cube.sizes.get(axis, 0) for axis in grid_axes(cube)}
    names = {axis: (axis, f"{axis}s") for axis in (DATASET, SEED, METHOD, ENCODER)} | {THETA: ("angle θ", "angles θ")}
    names |= {dim: (f"value of {cube[dim].attrs[PATH]}", f"values of {cube[dim].attrs[PATH]}") for dim in swept(cube)}
    done = int(np.isfinite(cube[WALL_TIME].values).sum()) if WALL_TIME in cube else 0
    grid = " × ".join(f"{n:,} {names[a][n != 1]}" for a, n in sizes.items())
    return f"{grid} = {math.prod(sizes.values()):,} cells, {done:,} finished."


def _image(figure: Figure, file_name: str, alt: str, caption: str) -> FigureImage:
    return FigureImage(png_bytes(figure), file_name, alt, caption)


def _modified_ns(path: Path) -> int:
    """When ``path`` last changed: a file's modification time, or the latest of a folder's files (a
    chunked store); 0 when it does not exist."""
    if not path.exists():
        return 0
    return max(entry.stat().st_mtime_ns for entry in [path, *(path.rglob("*") if path.is_dir() else ())])


def _has_named_index(frame: pd.DataFrame) -> bool:
    """Whether the index carries data (a named or multi-level index) rather than row numbers."""
    return any(name is not None for name in frame.index.names)


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)
