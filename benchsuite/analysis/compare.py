"""Comparing runs: the difference of every metric between two cubes, with a confidence interval and a test across seeds.

Two runs of the same study (another method's version, another saliency method, a rerun on
another machine) are aligned on their grid coordinates. A cell is the same cell in both when
all its coordinates match; the comparison uses those cells, and lists the cells each run has
alone. Per metric:

1. each cell's value is its mean over evaluation images (a cell metric is its value);
2. each seed's value is the mean over the matched cells of that seed (the seed is the replicate:
   one training run per cell, so images of a cell are not independent);
3. with two or more seeds in both runs the test is paired: the mean of the per-seed differences
   B - A, its Student-t confidence interval and the paired t-test (scipy's ``ttest_rel``);
   otherwise, with two or more seeds in each run, it is Welch's: the difference of the
   per-seed means over each run's cells at the shared coordinates but the seed,
   Welch-Satterthwaite degrees of freedom and scipy's ``ttest_ind(equal_var=False)``. Fewer
   seeds give the difference without an interval or a test.

The printed table follows asv's ``compare``: the two values, their ratio, and a mark in the
first column for a difference significant at the level (``+`` B larger, ``-`` B smaller). A
metric that records which way is better (its ``higher_is_better``, the cube's ``better``
attribute) also gets the verdict: B ``better`` or ``worse`` than A, when the difference is
significant. Above the table stand the cells and metrics only one run has, and the settings in
which the runs differ (the suite's, the library versions, the device), since a comparison is
only as good as knowing what changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml
from scipy import stats

from benchsuite.results.cube import (
    CELL_KEY,
    DEVICE_DESCRIPTION,
    HIGHER,
    IMAGE,
    LOWER,
    REPLICATE,
    SUITE_YAML,
    VERSIONS,
    better,
    grid_axes,
    metric_names,
    open_cube,
)
from benchsuite.results.errors import BenchsuiteError, make_output_folder

COMPARE_NAME = "compare.csv"
COLUMNS = ("metric", "a", "b", "difference", "ci_low", "ci_high", "ratio", "p", "seeds", "test", "better", "verdict")


@dataclass(frozen=True)
class Comparison:
    """Run B against run A: one row per metric shared by both (:data:`COLUMNS`), what only one has, and what differs."""

    a: str
    b: str
    table: pd.DataFrame
    shared_cells: int
    only_a: list[dict[str, object]]
    only_b: list[dict[str, object]]
    metrics_only_a: list[str]
    metrics_only_b: list[str]
    settings: list[tuple[str, str, str]]
    """(setting, A's value, B's value) for every setting the runs differ in; see :func:`setting_differences`."""
    confidence: float


def compare_cubes(a: xr.Dataset, b: xr.Dataset, *, names: tuple[str, str] = ("A", "B"), confidence: float = 0.95) -> Comparison:
    """Compare cube ``b`` with cube ``a``: per metric, B - A with a confidence interval and a test across seeds."""
    for cube, name in zip((a, b), names, strict=True):
        if CELL_KEY not in cube:  # the cells a run's suite holds; a cube assembled by hand may lack it
            raise BenchsuiteError(
                f"{name} has no {CELL_KEY} variable, so its cells cannot be matched; compare needs cubes of runs."
            )
    axes_a, axes_b = grid_axes(a), grid_axes(b)
    if axes_a != axes_b:
        raise BenchsuiteError(
            f"{names[0]} and {names[1]} have different grid dimensions ({', '.join(axes_a)} against {', '.join(axes_b)}); "
            "only runs of the same study, sweeping the same parameters, can be compared."
        )
    cells_a, cells_b = _cells(a), _cells(b)
    shared = cells_a.index.intersection(cells_b.index)
    metrics = [m for m in metric_names(a) if m in set(metric_names(b))]
    only_a = [m for m in metric_names(a) if m not in metrics]
    only_b = [m for m in metric_names(b) if m not in set(metric_names(a))]
    if not metrics:
        raise BenchsuiteError(f"{names[0]} and {names[1]} have no metric in common; nothing to compare.")
    rows = []
    for metric in metrics:
        row = _compare_metric(metric, _per_cell(a, metric), _per_cell(b, metric), shared, confidence)
        direction = better(b, metric) or better(a, metric) or ""
        rows.append(row | {"better": direction, "verdict": verdict(row["difference"], row["p"], direction, 1 - confidence)})
    return Comparison(
        a=names[0],
        b=names[1],
        table=pd.DataFrame(rows, columns=list(COLUMNS)),
        shared_cells=len(shared),
        only_a=_records(cells_a.index.difference(shared)),
        only_b=_records(cells_b.index.difference(shared)),
        metrics_only_a=only_a,
        metrics_only_b=only_b,
        settings=setting_differences(a.attrs, b.attrs),
        confidence=confidence,
    )


def setting_differences(a: Mapping[str, object], b: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """(setting, A's, B's) where two cubes' attributes differ: every value of the suite, by its path
    (``methods.moco.params.epochs``), each library's version, and the device."""

    def settings(attrs: Mapping[str, object]) -> dict[str, str]:
        found = dict(_flat(yaml.safe_load(str(attrs.get(SUITE_YAML) or "{}")) or {}))
        found |= {f"version of {k}": v for k, v in json.loads(str(attrs.get(VERSIONS) or "{}")).items()}
        return found | {"device": str(attrs.get(DEVICE_DESCRIPTION, ""))}

    ours, theirs = settings(a), settings(b)
    return [
        (key, ours.get(key, "(not set)"), theirs.get(key, "(not set)"))
        for key in dict.fromkeys([*ours, *theirs])
        if ours.get(key) != theirs.get(key)
    ]


def _flat(value: object, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, value as YAML flow text) of every leaf of a parsed YAML document; lists are leaves."""
    if isinstance(value, dict) and value:
        return [pair for key, item in value.items() for pair in _flat(item, f"{path}.{key}" if path else str(key))]
    return [(path, yaml.safe_dump(value, default_flow_style=True, width=1_000).strip().removesuffix("\n..."))]


def _cells(cube: xr.Dataset) -> pd.DataFrame:
    """The cells the run's suite holds (a non-empty cell key), indexed by their grid coordinates."""
    keys = cube[CELL_KEY].to_series()
    return keys[keys != ""].to_frame()


def _per_cell(cube: xr.Dataset, metric: str) -> pd.Series:
    values = cube[metric]
    if IMAGE in values.dims:
        values = values.mean(IMAGE, skipna=True)
    return values.to_series()


def _compare_metric(metric: str, a: pd.Series, b: pd.Series, shared: pd.Index, confidence: float) -> dict[str, object]:
    a_cells, b_cells = a.reindex(shared), b.reindex(shared)
    both = a_cells.notna() & b_cells.notna()
    per_seed_a = a_cells[both].groupby(level=REPLICATE).mean()
    per_seed_b = b_cells[both].groupby(level=REPLICATE).mean()
    if len(per_seed_a) >= 2:
        return _paired(metric, per_seed_a, per_seed_b, confidence)
    apart = _seed_means_where_both(a, b)
    # One shared seed cannot give an interval; the seeds of each run apart still can.
    if min(map(len, apart)) >= 2 or not len(per_seed_a):
        return _welch(metric, *apart, confidence)
    return _paired(metric, per_seed_a, per_seed_b, confidence)


def _seed_means_where_both(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each run's per-seed means over the coordinates, all but the seed, at which both runs have values."""
    a, b = a.dropna(), b.dropna()
    common = a.index.droplevel(REPLICATE).intersection(b.index.droplevel(REPLICATE))

    def means(values: pd.Series) -> pd.Series:
        return values[values.index.droplevel(REPLICATE).isin(common)].groupby(level=REPLICATE).mean()

    return means(a), means(b)


def _paired(metric: str, a: pd.Series, b: pd.Series, confidence: float) -> dict[str, object]:
    difference = b - a
    n = len(difference)
    low = high = p = np.nan
    if n >= 2:
        spread = difference.std(ddof=1)
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * spread / np.sqrt(n)
        low, high = difference.mean() - half, difference.mean() + half
        p = float(stats.ttest_rel(b.values, a.values).pvalue) if spread > 0 else (1.0 if difference.mean() == 0 else 0.0)
    return _row(metric, a.mean(), b.mean(), low, high, p, n, "paired")


def _welch(metric: str, a: pd.Series, b: pd.Series, confidence: float) -> dict[str, object]:
    low = high = p = np.nan
    if len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = np.sqrt(va + vb)
        if se > 0:
            df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
            half = stats.t.ppf((1 + confidence) / 2, df) * se
            low, high = b.mean() - a.mean() - half, b.mean() - a.mean() + half
            p = float(stats.ttest_ind(b.values, a.values, equal_var=False).pvalue)
    return _row(metric, a.mean(), b.mean(), low, high, p, f"{len(a)}+{len(b)}", "welch")


def _row(metric: str, a: float, b: float, low: float, high: float, p: float, seeds: object, test: str) -> dict[str, object]:
    ratio = b / a if a != 0 else np.nan
    values = (metric, a, b, b - a, low, high, ratio, p, seeds, test)
    return dict(zip(COLUMNS[: len(values)], values, strict=True))  # the test's columns; the verdict's come after


def verdict(difference: float, p: float, direction: str, alpha: float) -> str:
    """B ``"better"`` or ``"worse"`` than A when the difference is significant at ``alpha`` and the metric
    has a ``direction`` ("higher" or "lower" is better); else empty."""
    if direction not in (HIGHER, LOWER) or not p < alpha or difference == 0:
        return ""
    return "better" if (difference > 0) == (direction == HIGHER) else "worse"


def _records(index: pd.Index) -> list[dict[str, object]]:
    return [dict(zip(index.names, values if isinstance(values, tuple) else (values,), strict=True)) for values in index]


def header_lines(comparison: Comparison, *, shown: int = 5) -> list[str]:
    """What stands above the table: the runs, the cells and metrics only one has, the settings that differ."""
    lines = [
        f"A = {comparison.a}",
        f"B = {comparison.b}",
        f"cells: {comparison.shared_cells} in both, {len(comparison.only_a)} only in A, {len(comparison.only_b)} only in B",
    ]
    cells = {"cells only in A": comparison.only_a, "cells only in B": comparison.only_b}
    for label, found in cells.items():
        if found:
            lines.append(f"  {label}: " + _some([", ".join(f"{k}={v}" for k, v in cell.items()) for cell in found], shown))
    metrics = {"metrics only in A": comparison.metrics_only_a, "metrics only in B": comparison.metrics_only_b}
    lines += [f"{label} (not compared): {', '.join(names)}" for label, names in metrics.items() if names]
    if comparison.settings:
        changes = [f"{key}: {a} -> {b}" for key, a, b in comparison.settings]
        lines.append(f"settings that differ ({len(changes)}): " + _some(changes, 2 * shown))
    return lines


def _some(items: list[str], shown: int) -> str:
    return "; ".join(items[:shown]) + (f"; and {len(items) - shown} more" if len(items) > shown else "")


def display_table(comparison: Comparison, *, alpha: float | None = None) -> pd.DataFrame:
    """The table as it is read, one row per metric, every cell as text: the mark (``+``/``-``), the
    metric, A, B, B/A, B - A, the interval, p, the seeds and test, and the verdict."""
    alpha = 1 - comparison.confidence if alpha is None else alpha
    rows = []
    for row in comparison.table.itertuples(index=False):
        significant = row.p == row.p and row.p < alpha
        rows.append(
            {
                "": ("+" if row.difference > 0 else "-") if significant else "",
                "metric": row.metric,
                "A": f"{row.a:.4g}",
                "B": f"{row.b:.4g}",
                "B/A": "" if row.ratio != row.ratio else f"{row.ratio:.2f}",
                "B - A": f"{row.difference:+.4g}",
                f"{comparison.confidence:.0%} CI": "" if row.ci_low != row.ci_low else f"[{row.ci_low:+.4g}, {row.ci_high:+.4g}]",
                "p": "" if row.p != row.p else f"{row.p:.2g}",
                "seeds": f"{row.seeds} {row.test}",
                "B is": verdict(row.difference, row.p, row.better, alpha),
            }
        )
    return pd.DataFrame(rows)


def legend(alpha: float) -> str:
    """What the marks and the last column of :func:`display_table` mean."""
    return (
        f"+/-: B larger/smaller than A at p < {alpha:g}; seeds are the replicates the test runs over. "
        "B is better or worse by the metric's own direction (higher or lower is better), where it has one."
    )


def format_comparison(comparison: Comparison, *, alpha: float | None = None) -> str:
    """The comparison as the terminal prints it: :func:`header_lines`, then one line per metric (asv compare's layout)."""
    alpha = 1 - comparison.confidence if alpha is None else alpha
    shown = display_table(comparison, alpha=alpha)
    text_columns = ("", "metric", "seeds", "B is")  # left-aligned; the numbers are right-aligned
    widths = {c: max(len(c), *(len(v) for v in shown[c])) for c in shown.columns}
    widths[""] = 1

    def line(cells: Mapping[str, str]) -> str:
        parts = [f"{cells[c]:<{widths[c]}}" if c in text_columns else f"{cells[c]:>{widths[c]}}" for c in shown.columns]
        return "  " + "  ".join(parts).rstrip()

    table = [line({c: c for c in shown.columns})] + [line(row) for row in shown.to_dict("records")]
    return "\n".join([*header_lines(comparison), "", *table, "", legend(alpha)])


def compare_runs(run_dirs: Sequence[Path], *, out: Path, confidence: float = 0.95) -> str:
    """Compare every run after the first with the first; write ``out/compare.csv`` and return the printed text."""
    if len(run_dirs) < 2:
        raise BenchsuiteError("compare needs at least two run directories: the baseline, then one or more to compare with it.")
    baseline = open_cube(run_dirs[0])
    texts, frames = [], []
    for other_dir in run_dirs[1:]:
        comparison = compare_cubes(
            baseline, open_cube(other_dir), names=(str(run_dirs[0]), str(other_dir)), confidence=confidence
        )
        texts.append(format_comparison(comparison))
        frames.append(comparison.table.assign(run_a=comparison.a, run_b=comparison.b))
    path = make_output_folder(out) / COMPARE_NAME
    table = pd.concat(frames, ignore_index=True)
    table[["run_a", "run_b", *COLUMNS]].to_csv(path, index=False)
    return "\n\n".join(texts) + f"\n\ntable: {path}"
