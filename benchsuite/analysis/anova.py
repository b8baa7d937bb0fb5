"""Factorial ANOVA of each metric over the suite's grid factors, read from the results cube.

The question of the rotation-angle study is whether θ and the dataset interact. For every
metric this module fits ``value ~ C(theta, Sum) * C(dataset, Sum)`` (extended with each swept
parameter, the SSP method and the encoder when the suite varies them) by OLS and reports F, p
and partial η² per term. A swept parameter's interaction with the dataset then reads like θ's,
``strength:dataset``.

Two rules keep the test honest:

- **No pseudo-replication.** Per-image values are averaged within each grid cell first; the
  seeds are the replicates, never the images.
- **Sum-to-zero contrasts always,** so Type III sums of squares mean what they claim. Type II is
  the default.

The statistics are those of statsmodels; this module only shapes the cube into a frame, guards
the design (replicates, empty factor combinations) and labels the result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
import xarray as xr
from statsmodels.stats.anova import anova_lm

from benchsuite.analysis.guard import check_memory, design_bytes
from benchsuite.analysis.settings import HARMONIC_TERM, HARMONICS_CHOSEN
from benchsuite.results.cube import IMAGE, METRIC, REPLICATE, ROLE, SCOPE, grid_axes, metric_names
from benchsuite.results.cube import factors as cube_factors
from benchsuite.results.errors import BenchsuiteError, did_you_mean

RESIDUAL = "Residual"
SS_TYPE = "ss_type"
"""The key of ``DataFrame.attrs`` under which :func:`anova_table` records its type of sums of squares (2 or 3)."""
ANOVA_COLUMNS = ["sum_sq", "df", "F", "p", "partial_eta_sq"]
TABLE_COLUMNS = ["metric", "term", *ANOVA_COLUMNS, "balanced", "n_per_cell"]
_ROMAN = {2: "II", 3: "III"}


class AnovaError(BenchsuiteError, ValueError):
    """The cube or the design cannot support the ANOVA asked for; the message says why."""


def cell_means(cube: xr.Dataset, metric: str) -> pd.DataFrame:
    """One row per grid cell that has a value for ``metric``.

    Columns: the grid dimensions (``dataset, theta, seed, method, encoder``, then any swept
    parameter), ``value`` and, for an image-scope metric, ``n_images``. An image-scope metric is
    averaged over the images that are not NaN (``n_images`` counts them); a cell-scope metric is
    taken as it is. Cells without a value (not run, or every image NaN) are dropped.
    """
    variable = _metric_variable(cube, metric)
    if IMAGE in variable.dims:
        n_images = variable.count(IMAGE)
        # Sum over count rather than a NaN-mean: a cell whose images are all NaN becomes NaN
        # quietly instead of raising numpy's "mean of empty slice" warning once per cell.
        value = variable.sum(IMAGE, skipna=True) / n_images.where(n_images > 0)
        columns = xr.Dataset({"value": value, "n_images": n_images})
    else:
        columns = xr.Dataset({"value": variable})
    frame = columns.transpose(*grid_axes(cube)).to_dataframe().reset_index()
    return frame[frame["value"].notna()].reset_index(drop=True)


def anova(frame: pd.DataFrame, factors: Sequence[str], typ: Literal[2, 3] = 2) -> pd.DataFrame:
    """Full-factorial OLS ANOVA of ``frame["value"]`` on ``factors``, with sum contrasts.

    The model is ``value ~ C(f1, Sum) * C(f2, Sum) * ...``; ``typ`` picks Type II (default) or
    Type III sums of squares. Returns one row per term, indexed by ``term`` with readable
    names (``theta``, ``dataset``, ``theta:dataset``, ..., ``Residual``; Type III's intercept
    test is left out), and columns ``sum_sq, df, F, p, partial_eta_sq``, where partial η² is
    SS_term / (SS_term + SS_residual) and NaN on the residual row.

    Raises :class:`AnovaError` (a ``ValueError``) when a factor has a single level, when a
    combination of factor levels has no observation (the interaction is then not estimable),
    or when there is no residual degree of freedom (one replicate per combination).
    """
    if typ not in (2, 3):
        raise ValueError(f"typ must be 2 or 3 (Type II or Type III sums of squares), not {typ!r}.")
    factors = list(factors)
    if not factors:
        raise ValueError("anova needs at least one factor.")
    unknown = [f for f in ["value", *factors] if f not in frame.columns]
    if unknown:
        raise ValueError(f"the frame has no column {unknown[0]!r}; it has {list(frame.columns)}.")
    data = frame[["value", *factors]].dropna()
    counts = _replicate_counts(data, factors)
    _check_design(counts, factors)

    names = placeholders(factors)
    model_data = pd.DataFrame({"value": data["value"].to_numpy(dtype=float)} | {p: data[f].to_numpy() for p, f in names.items()})
    model = smf.ols(factorial_formula(names), data=model_data).fit()
    table = anova_lm(model, typ=typ).drop(index="Intercept", errors="ignore")
    table.index = pd.Index([readable_term(term, names) for term in table.index], name="term")
    table = table.rename(columns={"PR(>F)": "p"})
    ss_residual = table.at[RESIDUAL, "sum_sq"]
    table["partial_eta_sq"] = table["sum_sq"] / (table["sum_sq"] + ss_residual)
    table.loc[RESIDUAL, "partial_eta_sq"] = math.nan
    return table[ANOVA_COLUMNS]


def placeholders(factors: Sequence[str]) -> dict[str, str]:
    """A formula name per factor (``factor0, factor1, ...``), mapped to the factor's column.

    Patsy evaluates a formula as Python, so column names never go into one (a label with a quote
    would break even Q()-quoting, and a swept parameter may be called anything); these do.
    """
    return {f"factor{i}": factor for i, factor in enumerate(factors)}


def factorial_formula(names: Mapping[str, str]) -> str:
    """``value ~ C(factor0, Sum) * C(factor1, Sum) * ...`` over :func:`placeholders`: the full factorial."""
    return "value ~ " + " * ".join(f"C({name}, Sum)" for name in names)


def readable_term(term: str, names: Mapping[str, str]) -> str:
    """A term of :func:`factorial_formula` (``C(factor0, Sum):C(factor1, Sum)``) as ``theta:dataset``."""
    return ":".join(names.get(part.removeprefix("C(").removesuffix(", Sum)"), part) for part in term.split(":"))


def anova_table(cube: xr.Dataset, metrics: Sequence[str] | None = None, typ: Literal[2, 3] = 2) -> pd.DataFrame:
    """The ANOVA of every metric in ``cube``, in long form.

    ``metrics`` defaults to every variable with ``role="metric"``. Each metric is reduced to
    :func:`cell_means`, then analysed with :func:`anova` over the cube's factors
    (:func:`benchsuite.results.cube.factors`: θ, any swept parameter, the dataset, the method and the
    encoder) that have more than one level in its data.

    Columns: ``metric, term, sum_sq, df, F, p, partial_eta_sq, balanced, n_per_cell``.
    ``balanced`` is True when every combination of factor levels has the same number of
    observations (seeds). ``n_per_cell`` is always a string, so the column has one type: that
    number (``"3"``) when balanced, else the range ``"min-max"`` (``"2-3"``). The table's
    ``attrs[SS_TYPE]`` is ``typ``, so whoever prints it can say which sums of squares it holds.

    A metric that cannot be analysed (no values, no factor that varies, a replicate missing
    everywhere in a combination, ...) is skipped with a warning that names the reason. A cube
    with a single seed cannot be analysed at all, and a metric name that is unknown or not a
    well-formed metric variable is a mistake rather than missing data: both raise
    :class:`AnovaError`. A design too large for memory raises
    :class:`~benchsuite.analysis.guard.AnalysisTooLarge` before any fit.
    """
    names = metric_names(cube) if metrics is None else list(metrics)
    for name in names:
        _metric_variable(cube, name)
    if cube.sizes.get(REPLICATE, 0) < 2:
        raise AnovaError(
            f"the cube has {cube.sizes.get(REPLICATE, 0)} seed(s), so no cell has a replicate and the "
            "ANOVA has no residual degrees of freedom: add seeds to the suite (at least 2, "
            "better 3 or more)."
        )

    levels = [cube.sizes[f] for f in cube_factors(cube) if cube.sizes[f] > 1]
    rows = int(np.prod([cube.sizes[d] for d in grid_axes(cube)]))
    columns = int(np.prod(levels))  # the full factorial: one column per combination of levels
    check_memory("ANOVA", f"its design of {rows:,} cells × {columns:,} columns", design_bytes(rows, columns))
    blocks = []
    for name in names:
        try:
            block = _metric_anova(cube, name, typ)
        except AnovaError as error:
            warnings.warn(f"ANOVA of metric {name!r} skipped: {error}", stacklevel=2)
            continue
        blocks.append(block)
    table = pd.concat(blocks, ignore_index=True)[TABLE_COLUMNS] if blocks else pd.DataFrame(columns=TABLE_COLUMNS)
    table.attrs[SS_TYPE] = typ
    return table


def anova_heading(table: pd.DataFrame) -> str:
    """What kind of ANOVA ``table`` holds: ``"ANOVA (Type II sums of squares, sum contrasts)"``.

    The type comes from ``table.attrs[SS_TYPE]``; a table without it (read back from a CSV file)
    names the contrasts alone, which are always sum-to-zero. A harmonic regression's table
    (:mod:`benchsuite.analysis.harmonic`, terms ``harmonics...``) is named as one.
    """
    if table["term"].astype(str).str.startswith(HARMONIC_TERM).any():
        return "Harmonic regression of θ (sin kθ, cos kθ; nested F-tests)"
    typ = table.attrs.get(SS_TYPE)
    sums = f"Type {_ROMAN[typ]} sums of squares, " if typ in _ROMAN else ""
    return f"ANOVA ({sums}sum contrasts)"


def format_anova(table: pd.DataFrame) -> str:
    """An aligned plain-text rendering of :func:`anova_table` for the terminal.

    A line saying what the ANOVA is (:func:`anova_heading`), then one block per metric, headed
    by the metric name and whether the design is balanced with how many observations per
    cell. F has 2 decimals, p 2 significant digits in scientific notation, partial η² 3
    decimals; the residual row leaves them blank.
    """
    heading = f"{anova_heading(table)} on per-cell means"
    if table.empty:
        return f"{heading}: no metric could be analysed."
    header = ["term", "sum_sq", "df", "F", "p", "partial η²"]
    blocks = []
    for metric, rows in table.groupby("metric", sort=False):
        first = rows.iloc[0]
        balance = "balanced" if first["balanced"] else "unbalanced"
        lines = [header] + [
            [
                str(row.term),
                f"{row.sum_sq:.4g}",
                f"{row.df:g}",
                _blank_nan(row.F, ".2f"),
                _blank_nan(row.p, ".1e"),
                _blank_nan(row.partial_eta_sq, ".3f"),
            ]
            for row in rows.itertuples()
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        body = [
            "  ".join(
                [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
            ).rstrip()
            for line in lines
        ]
        title = f"{metric}: {balance}, {first['n_per_cell']} observations per cell"
        if (k := table.attrs.get(HARMONICS_CHOSEN, {}).get(metric)) is not None:
            title += f", K = {k} harmonic{'s' if k > 1 else ''}"
        blocks.append("\n".join([title, *("  " + line for line in body)]))
    return "\n\n".join([heading, *blocks])


def _metric_variable(cube: xr.Dataset, metric: str) -> xr.DataArray:
    """The metric's variable, checked for role and dims, without non-dimension coordinates."""
    if metric not in cube.data_vars:
        known = metric_names(cube)
        suggestion = did_you_mean(metric, known)
        raise AnovaError(f"the cube has no metric {metric!r}; its metrics are {known}.{suggestion}")
    variable = cube[metric]
    if variable.attrs.get(ROLE) != METRIC:
        raise AnovaError(
            f"variable {metric!r} has role {variable.attrs.get(ROLE)!r}, not 'metric'; "
            f"the cube's metrics are {metric_names(cube)}."
        )
    expected = set(grid_axes(cube)) | ({IMAGE} if variable.attrs.get(SCOPE) == IMAGE else set())
    if set(variable.dims) != expected:
        raise AnovaError(
            f"metric {metric!r} (scope {variable.attrs.get(SCOPE)!r}) has dims {variable.dims}; expected {sorted(expected)}."
        )
    return variable.reset_coords(drop=True)


def varying_factors(frame: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """The ``factors`` (a cube's :func:`~benchsuite.results.cube.factors`) with more than one level in ``frame``.

    An error if none.
    """
    varying = [f for f in factors if frame[f].nunique() > 1]
    if not varying:
        raise AnovaError("no grid factor has more than one level with values.")
    return varying


def _metric_anova(cube: xr.Dataset, metric: str, typ: Literal[2, 3]) -> pd.DataFrame:
    """The long-form ANOVA rows of one metric, with its design summary."""
    frame = cell_means(cube, metric)
    if frame.empty:
        raise AnovaError("every cell is NaN.")
    factors = varying_factors(frame, cube_factors(cube))
    result = anova(frame, factors, typ=typ).reset_index()
    result.insert(0, "metric", metric)
    result["balanced"], result["n_per_cell"] = design_summary(frame, factors)
    return result


def design_summary(frame: pd.DataFrame, factors: Sequence[str]) -> tuple[bool, str]:
    """Whether every combination of ``factors`` has as many observations as every other, and how many.

    The count is a string, so the column has one type: ``"3"`` when balanced, else ``"2-3"``.
    """
    counts = _replicate_counts(frame, list(factors))
    low, high = int(counts.min()), int(counts.max())
    return low == high, str(low) if low == high else f"{low}-{high}"


def _replicate_counts(data: pd.DataFrame, factors: list[str]) -> pd.Series:
    """Observations per combination of factor levels, zero for combinations never observed."""
    # value_counts keeps a MultiIndex even for a single factor, unlike groupby.
    counts = data.value_counts(subset=factors)
    levels = [sorted(data[f].unique()) for f in factors]
    full = pd.MultiIndex.from_product(levels, names=factors)
    return counts.reindex(full, fill_value=0)


def _check_design(counts: pd.Series, factors: list[str]) -> None:
    """Refuse designs the full-factorial model cannot be fitted to, with the fix in the message."""
    single = [f for f, names in zip(factors, counts.index.levels, strict=True) if len(names) < 2]
    if single:
        raise AnovaError(f"factor {single[0]!r} has a single level; leave it out of the factors.")
    empty = counts.index[counts == 0]
    if len(empty):
        shown = ", ".join("(" + ", ".join(f"{f}={v!r}" for f, v in zip(factors, combo, strict=True)) + ")" for combo in empty[:3])
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        raise AnovaError(
            f"no observation for the factor combination(s) {shown}{more}, so their interaction "
            "is not estimable: run those cells, or drop the levels from the analysis."
        )
    n_obs, n_cells = int(counts.sum()), len(counts)
    if n_obs <= n_cells:
        raise AnovaError(
            f"{n_obs} observations for {n_cells} combinations of ({', '.join(factors)}) leave no "
            "residual degrees of freedom: each combination needs replicates, so add seeds to the "
            "suite (at least 2, better 3 or more)."
        )


def _blank_nan(number: float, spec: str) -> str:
    return "" if math.isnan(number) else format(number, spec)
