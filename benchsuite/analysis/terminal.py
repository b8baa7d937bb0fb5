"""The analysis as ``benchsuite analyze`` prints it, after writing the tables beside the cube.

:func:`analyze_run` is the command: the tables of :mod:`benchsuite.analysis.summary` from the
run directory's cube, written beside it, and :func:`format_summary`'s text returned.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from benchsuite.analysis.anova import format_anova
from benchsuite.analysis.periodicity import level_label, series_columns
from benchsuite.analysis.settings import analysis_options, study_terms
from benchsuite.analysis.summary import (
    SKIPPED,
    analyze_cube,
    metric_rows,
    prediction_summary,
    skipped_note,
    table_metrics,
    write_tables,
)
from benchsuite.results.cube import DATASET, INTERACTION, open_cube


def analyze_run(run_dir: Path, *, typ: Literal[2, 3] = 2, harmonics: int | Literal["auto"] | None = None) -> str:
    """Analyse ``run_dir``'s cube, write the tables and ``summary.json`` beside it, return the terminal text.

    Writes ``<name>.csv`` for each of :data:`~benchsuite.analysis.summary.TABLE_NAMES` and ``summary.json``. ``harmonics``
    overrides the suite's. Reads nothing but the cube, so a copy of ``results.nc`` alone in
    another directory gives the same files.
    """
    cube = open_cube(run_dir)
    tables = analyze_cube(cube, typ=typ, harmonics=harmonics)
    write_tables(cube, tables, run_dir)
    return format_summary(tables, study_terms(cube, analysis_options(cube)))


def format_summary(tables: dict[str, pd.DataFrame], terms: Sequence[str] = (INTERACTION,)) -> str:
    """The terminal text: which analyses were skipped and why (once, when any was), the ANOVA
    unless it was skipped, then per metric the mixed model's test of each of ``terms``, the
    dominant period of each series, the orientation-covariate regression, the curve test and the
    signature prediction. Lines of analyses that did not run for a metric are left out.

    ``terms`` are the study's interactions, :func:`benchsuite.analysis.settings.study_terms` of
    the cube analysed; the default, θ × dataset alone, is right for a coarse cube without a sweep."""
    periods = tables["periodicity"]
    # Label a series by the keys that tell series apart; usually the dataset alone.
    labels = [key for key in series_columns(periods) if periods[key].nunique() > 1] or [DATASET]
    blocks = [textwrap.fill(note, width=100)] if (note := skipped_note(tables)) else []
    if SKIPPED not in tables["anova"].attrs:
        blocks.append(format_anova(tables["anova"]))
    for metric in table_metrics(tables):
        mixed = metric_rows(tables["mixed"], metric)
        lines = [_mixed_line(row) for term in terms for _, row in mixed[mixed["term"] == term].iterrows()]
        series = metric_rows(periods, metric)
        if len(series):
            lines.append(_periods_line(series, labels))
        lines += [_covariate_line(row) for _, row in metric_rows(tables["covariate"], metric).iterrows()]
        if len(curves := metric_rows(tables["curve_test"], metric)):
            lines.append(_curve_test_line(curves))
        if (prediction := prediction_summary(metric_rows(tables["signature_prediction"], metric))) is not None:
            lines.append(
                f"  signature predicts the dataset: accuracy {prediction['accuracy']:.2f} "
                f"(chance {prediction['chance']:.2f}, mean of {prediction['folds']} folds)"
            )
        if lines:
            blocks.append("\n".join([f"{metric}:", *lines]))
    return "\n\n".join(blocks)


def _mixed_line(row: pd.Series) -> str:
    status = "converged" if row["converged"] else f"NOT converged: {row['note']}"
    return (
        f"  mixed model, {row['term']}: χ²({row['df']}) = {row['chi2']:.2f}, p = {row['p']:.1e} "
        f"(image var {row['image_var']:.3g}, run var {row['run_var']:.3g}; {status})"
    )


MAX_SERIES_SHOWN = 12
"""Past this many series the printed dominant periods are counted rather than listed (the follow-up has 256)."""


def _periods_line(series: pd.DataFrame, labels: list[str]) -> str:
    if len(series) > MAX_SERIES_SHOWN:
        counts = series["dominant_period"].map(_period).value_counts()
        shown = ", ".join(f"{period} in {count}" for period, count in counts.head(5).items())
        rest = int(counts.iloc[5:].sum())
        return f"  dominant period of {len(series)} series: {shown}" + (f", other periods in {rest}" if rest else "")
    shown = [
        f"{'/'.join(level_label(key, row[key]) for key in labels)} {_period(row['dominant_period'])}"
        + ("" if math.isnan(row["dominant_power"]) else f" ({row['dominant_power']:.0%})")
        for _, row in series.iterrows()
    ]
    return "  dominant period: " + ", ".join(shown)


def _curve_test_line(rows: pd.DataFrame) -> str:
    if len(rows) == 1:
        row = rows.iloc[0]
        return (
            f"  curve test (datasets' whole curves, permutation): F = {row['F']:.2f}, p = {row['p']:.2g} "
            f"({row['n_curves']} curves, {row['n_theta']} angles)"
        )
    different = int((rows["p"] < 0.05).sum())
    return f"  curve test (datasets' whole curves, permutation): p < 0.05 in {different} of {len(rows)} combinations"


def _covariate_line(row: pd.Series) -> str:
    return (
        f"  orientation autocorr: coef {row['coef']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}], "
        f"F({row['df_num']:g}, {row['df_denom']:g}) = {row['F']:.2f}, p = {row['p']:.1e}, "
        f"ΔR² = {row['delta_r2']:.3f}"
    )


def _period(period: float) -> str:
    return "none (flat)" if math.isnan(period) else f"{period:g}°"
