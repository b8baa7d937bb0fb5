"""The analysis of a cube, from the cube alone (so a copied cube gives the same tables).

:func:`analyze_cube` computes every table; :func:`write_tables` writes them beside the cube as
CSV files plus one ``summary.json``, and :func:`read_tables` reads them back.
:mod:`benchsuite.analysis.terminal` prints them.

Analyses the design of a cube cannot support are not run, quietly: those that estimate a
residual variance from the seeds (:data:`NEEDS_REPLICATES`) on a cube without replicates (one
seed per cell), and those about θ (:data:`ABOUT_THETA`) on a cube with a single θ (a sweep of
another parameter). Their tables are left empty with the reason in ``attrs[SKIPPED]``, and the
summary says so once. Another analysis that cannot run on a cube (θ not around the circle, no
orientation histogram) is skipped with a warning that names it, and the others still run; one
that fails for a single metric warns inside its own table function and leaves the other
metrics in.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import xarray as xr

from benchsuite.analysis.anova import SS_TYPE, TABLE_COLUMNS, anova_table, cell_means
from benchsuite.analysis.covariate import AUTOCORR_COLUMNS, COVARIATE_COLUMNS, autocorrelation_table, covariate_table
from benchsuite.analysis.functional import CURVE_TEST_COLUMNS, curve_test_table
from benchsuite.analysis.guard import AnalysisTooLarge
from benchsuite.analysis.harmonic import harmonic_table
from benchsuite.analysis.mixed import MIXED_COLUMNS, mixed_table
from benchsuite.analysis.periodicity import PERIODICITY_COLUMNS, periodicity_table, series_columns
from benchsuite.analysis.posthoc import DENSE_BINS, TUKEY_COLUMNS, tukey_table
from benchsuite.analysis.settings import HARMONICS_CHOSEN, analysis_options, study_terms
from benchsuite.analysis.signatures import (
    PREDICTION_COLUMNS,
    SIMILARITY_COLUMNS,
    prediction_table,
    prediction_unsupported,
    similarity_table,
)
from benchsuite.results.cube import PATH, REPLICATE, SUITE_NAME, THETA, grid_axes, metric_names, swept
from benchsuite.results.errors import BenchsuiteError

SUMMARY_NAME = "summary.json"
TABLE_NAMES = (
    "anova", "mixed", "periodicity", "tukey", "orientation_autocorr", "covariate",
    "curve_test", "signature_similarity", "signature_prediction",
)  # fmt: skip
"""The tables of :func:`analyze_cube`; each is written to ``<name>.csv``."""

_EMPTY_COLUMNS = {
    "anova": TABLE_COLUMNS,
    "mixed": MIXED_COLUMNS,
    "periodicity": PERIODICITY_COLUMNS,
    "tukey": TUKEY_COLUMNS,
    "orientation_autocorr": AUTOCORR_COLUMNS,
    "covariate": COVARIATE_COLUMNS,
    "curve_test": CURVE_TEST_COLUMNS,
    "signature_similarity": SIMILARITY_COLUMNS,
    "signature_prediction": PREDICTION_COLUMNS,
}

NEEDS_REPLICATES = {"anova": "ANOVA", "mixed": "mixed model", "tukey": "Tukey HSD", "curve_test": "curve test"}
"""The analyses that test against the variation between seeds of a cell, by table name and label.

Periodicity, the orientation autocorrelation and the covariate regression need no replicates:
they describe or regress the cell means themselves."""

SKIPPED = "skipped"
"""The key of ``DataFrame.attrs`` that holds why a table's analysis was not run; absent when it ran."""

WARNINGS = "warnings"
"""The key of ``DataFrame.attrs`` that holds the warnings its analysis raised (a metric or series left
out, or the whole analysis); absent when there were none."""

ABOUT_THETA = {
    "periodicity": "periodicity", "tukey": "Tukey HSD", "covariate": "orientation covariate", "curve_test": "curve test",
    "signature_similarity": "signature similarity", "signature_prediction": "signature prediction",
}  # fmt: skip
"""The analyses of how a metric changes with θ, by table name and label: a cube with one θ has nothing for them."""

SINGLE_THETA = "is about how a metric changes with θ, and this cube has a single θ (a sweep of another parameter)"

NO_REPLICATES = (
    "needs replicates (more than one seed per (dataset, θ, method, encoder) cell) to estimate the residual "
    "variance, and every cell of this cube has at most one seed with a value: add seeds to the suite (at "
    "least 2, better 3 or more)"
)


def analyze_cube(
    cube: xr.Dataset, *, typ: Literal[2, 3] = 2, harmonics: int | Literal["auto"] | None = None
) -> dict[str, pd.DataFrame]:
    """Every analysis of ``cube``, keyed by :data:`TABLE_NAMES`.

    ``anova`` (Type ``typ`` sums of squares), ``mixed`` (per-image mixed model), ``periodicity``
    (Fourier power of metric(θ)), ``tukey`` (pairwise θ comparisons), ``orientation_autocorr``
    (c(θ) per dataset), ``covariate`` (does c(θ) predict the metric), ``curve_test`` (do the
    datasets' whole curves differ), ``signature_similarity`` and ``signature_prediction`` (the
    follow-up's curve signatures). On a dense θ grid (the suite's ``analysis.dense_above``,
    :mod:`benchsuite.analysis.settings`) ``anova`` is the harmonic regression of
    :mod:`benchsuite.analysis.harmonic` with ``harmonics`` (default: the suite's) and the mixed
    model takes its harmonics; Tukey compares binned angles.

    Without replicates the analyses of :data:`NEEDS_REPLICATES`, with a single θ those of
    :data:`ABOUT_THETA`, and an analysis too large for memory
    (:class:`~benchsuite.analysis.guard.AnalysisTooLarge`) are not run: their tables are empty,
    with the reason in ``attrs[SKIPPED]``. Any other analysis the cube cannot support is warned
    about and left as an empty table with its usual columns.
    """
    options = analysis_options(cube, harmonics)
    dense = options.dense(cube)
    tables: dict[str, pd.DataFrame] = {}
    computations: dict[str, Callable[[], pd.DataFrame]] = {
        "anova": (lambda: harmonic_table(cube, options.harmonics)) if dense else (lambda: anova_table(cube, typ=typ)),
        "mixed": lambda: mixed_table(cube, harmonics=tables["anova"].attrs.get(HARMONICS_CHOSEN, {}) if dense else None),
        "periodicity": lambda: periodicity_table(cube, dense_above=options.dense_above),
        "tukey": lambda: tukey_table(cube, bins=min(DENSE_BINS, options.dense_above) if dense else None),
        "orientation_autocorr": lambda: autocorrelation_table(cube),
        "covariate": lambda: covariate_table(cube, autocorr=tables["orientation_autocorr"]),
        "curve_test": lambda: curve_test_table(cube),
        "signature_similarity": lambda: similarity_table(cube),
        "signature_prediction": lambda: prediction_table(cube),
    }
    # Analyses the design cannot support are skipped quietly, with the reason said once by the summary.
    reasons = {} if _has_replicates(cube) else dict.fromkeys(NEEDS_REPLICATES, NO_REPLICATES)
    if cube.sizes[THETA] < 2:
        reasons = dict.fromkeys(ABOUT_THETA, SINGLE_THETA) | reasons
    elif (unsupported := prediction_unsupported(cube)) is not None:
        reasons["signature_prediction"] = unsupported
    # A loop, not a comprehension, so that _section's warnings point at analyze_cube's caller.
    for name, compute in computations.items():
        if name in reasons:
            tables[name] = _skipped(name, reasons[name])
        elif name == "covariate" and tables["orientation_autocorr"].empty:
            # Without the autocorrelation the covariate has nothing to test, and the reason was given.
            tables[name] = pd.DataFrame(columns=COVARIATE_COLUMNS)
        else:
            tables[name] = _section(name, _guarded(name, compute))
    return tables


def summary_document(cube: xr.Dataset, tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The JSON-ready summary: the design, the headline numbers per metric, and every table as records.

    ``design`` holds the grid levels (swept parameters included), ``swept`` (each swept
    parameter's dimension mapped to its path in the suite, ``{}`` without a sweep), whether every
    metric's design is balanced and the observations per cell. ``metrics`` holds per metric:

    - ``balanced`` and ``n_per_cell``;
    - ``interactions``: per study interaction (:func:`benchsuite.analysis.settings.study_terms`:
      ``"theta:dataset"``, or ``"harmonics:dataset"`` when θ is dense, then
      ``"<swept>:dataset"`` for each swept parameter), ``{"anova":
      {F, p, partial_eta_sq}, "mixed": {chi2, df, p, converged}}``, each ``null`` when that
      analysis has no such term (a factor with a single level, a cell-scope metric's mixed model);
    - ``interaction`` and ``mixed_interaction``: the θ × dataset entries of ``interactions``
      again (``...["theta:dataset"]["anova"]`` and ``["mixed"]``, or ``"harmonics:dataset"``),
      as the first format had them;
    - ``harmonics``: the K of its θ curve when θ is dense;
    - ``dominant_periods``: the dominant period of each metric(θ) series, with its series keys;
    - ``covariate``: the covariate regression;
    - ``curve_test``: the permutation test of the datasets' curves, per combination of the
      other factors (``F, p`` with those factors' levels);
    - ``signature_prediction``: ``{accuracy, chance, folds}``, the mean accuracy over the folds.

    ``theta`` says how θ was analysed: ``{"model": "categorical" or "harmonics", "dense_above"}``.
    ``anova_type`` is the type of sums of squares (``null`` when the ANOVA was skipped or θ is dense),
    ``skipped`` maps each analysis that was not run to the reason, and ``warnings`` each table
    whose analysis warned to its warnings. ``tables`` holds every table as records but
    ``signature_similarity``, whose pairs grow as the square of the curves (its CSV file has them).
    NaN becomes ``null``.
    """
    options = analysis_options(cube)
    terms = study_terms(cube, options)
    chosen = tables["anova"].attrs.get(HARMONICS_CHOSEN, {})
    per_metric: dict[str, dict[str, Any]] = {}
    for metric in table_metrics(tables):
        entry: dict[str, Any] = {}
        anova = metric_rows(tables["anova"], metric)
        if len(anova):
            entry["balanced"] = bool(anova["balanced"].iloc[0])
            entry["n_per_cell"] = str(anova["n_per_cell"].iloc[0])
        mixed = metric_rows(tables["mixed"], metric)
        tests = {
            term: {
                "anova": _record(anova[anova["term"] == term], ["F", "p", "partial_eta_sq"]),
                "mixed": _record(mixed[mixed["term"] == term], ["chi2", "df", "p", "converged"]),
            }
            for term in terms
        }
        entry["interaction"] = tests[terms[0]]["anova"]
        entry["mixed_interaction"] = tests[terms[0]]["mixed"]
        entry["interactions"] = tests
        if metric in chosen:
            entry["harmonics"] = chosen[metric]
        periods = metric_rows(tables["periodicity"], metric)
        entry["dominant_periods"] = _records(periods[[*series_columns(periods), "dominant_period", "dominant_power"]])
        covariate = metric_rows(tables["covariate"], metric)
        entry["covariate"] = _record(covariate, [c for c in COVARIATE_COLUMNS if c != "metric"])
        curves = metric_rows(tables["curve_test"], metric)
        entry["curve_test"] = _records(curves[[c for c in curves.columns if c not in ("metric", "n_permutations")]])
        entry["signature_prediction"] = prediction_summary(metric_rows(tables["signature_prediction"], metric))
        per_metric[metric] = entry
    balance = [entry["balanced"] for entry in per_metric.values() if "balanced" in entry]
    counts = sorted({entry["n_per_cell"] for entry in per_metric.values() if "n_per_cell" in entry})
    return {
        "suite": cube.attrs.get(SUITE_NAME),
        "design": {
            "grid": {dim: cube[dim].values.tolist() for dim in grid_axes(cube)},
            "swept": {dim: cube[dim].attrs[PATH] for dim in swept(cube)},
            "balanced": all(balance) if balance else None,
            "n_per_cell": ", ".join(counts) or None,
        },
        THETA: {"model": "harmonics" if options.dense(cube) else "categorical", "dense_above": options.dense_above},
        "anova_type": tables["anova"].attrs.get(SS_TYPE),
        "skipped": skipped_analyses(tables),
        "warnings": {name: table.attrs[WARNINGS] for name, table in tables.items() if WARNINGS in table.attrs},
        "metrics": per_metric,
        "tables": {name: _records(table) for name, table in tables.items() if name != "signature_similarity"},
    }


def write_tables(cube: xr.Dataset, tables: dict[str, pd.DataFrame], run_dir: Path) -> None:
    """Write each table as ``<name>.csv`` and everything as ``summary.json`` into ``run_dir``.

    A skipped analysis still gets its CSV file, with the header alone, so the set of files is
    the same for every cube; ``summary.json`` says under ``skipped`` why it is empty.
    """
    for name, table in tables.items():
        table.to_csv(Path(run_dir) / f"{name}.csv", index=False)
    document = summary_document(cube, tables)
    (Path(run_dir) / SUMMARY_NAME).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def skipped_analyses(tables: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """Why each analysis that was not run was skipped, by table name; empty when all ran."""
    return {name: table.attrs[SKIPPED] for name, table in tables.items() if SKIPPED in table.attrs}


def skipped_note(tables: Mapping[str, pd.DataFrame]) -> str:
    """One sentence per reason naming the analyses skipped for it; empty when all ran."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped_analyses(tables).items():
        by_reason.setdefault(reason, []).append((NEEDS_REPLICATES | ABOUT_THETA).get(name, name))
    return " ".join(f"Skipped: {', '.join(names)}; each {reason}." for reason, names in by_reason.items())


def _has_replicates(cube: xr.Dataset) -> bool:
    """Whether some metric has values from more than one seed in some cell (every grid dimension but the seed)."""
    cell = [axis for axis in grid_axes(cube) if axis != REPLICATE]
    return any(cell_means(cube, name).duplicated(cell).any() for name in metric_names(cube))


def _skipped(name: str, reason: str) -> pd.DataFrame:
    """The empty table of an analysis the cube's design cannot support, with the reason."""
    table = pd.DataFrame(columns=_EMPTY_COLUMNS[name])
    table.attrs[SKIPPED] = reason
    return table


def _guarded(name: str, compute: Callable[[], pd.DataFrame]) -> Callable[[], pd.DataFrame]:
    """``compute``, turning an analysis too large for memory into its skipped table, with the size as the reason."""

    def run() -> pd.DataFrame:
        try:
            return compute()
        except AnalysisTooLarge as error:
            return _skipped(name, error.reason)

    return run


def _section(name: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``compute()``, or, when the cube cannot support that analysis, a warning and an empty table.

    The warnings raised meanwhile are emitted as usual and also kept in the table's
    ``attrs[WARNINGS]``, so that the report can say why a table is empty or lacks a metric.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = compute()
        except BenchsuiteError as error:
            warnings.warn(f"{name} analysis skipped: {error}", stacklevel=3)
            table = pd.DataFrame(columns=_EMPTY_COLUMNS[name])
    for warning in caught:  # where they came from, so that the caller's filters and output are as without recording
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if caught:
        table.attrs[WARNINGS] = [str(warning.message) for warning in caught]
    return table


def metric_rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``table`` about ``metric``."""
    return table[table["metric"] == metric]


def table_metrics(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Every metric that appears in any table, in order of first appearance."""
    seen = [m for table in tables.values() if "metric" in table.columns for m in table["metric"]]
    return list(dict.fromkeys(seen))


def prediction_summary(folds: pd.DataFrame) -> dict[str, Any] | None:
    """The signature prediction's folds of one metric as its mean accuracy, chance level and fold count."""
    if folds.empty:
        return None
    return {"accuracy": float(folds["accuracy"].mean()), "chance": float(folds["chance"].iloc[0]), "folds": len(folds)}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """``table`` as JSON-ready records, NaN as None (pandas' JSON writer does the type mapping)."""
    return json.loads(table.to_json(orient="records", double_precision=15))


def _record(rows: pd.DataFrame, columns: list[str]) -> dict[str, Any] | None:
    """The first of ``rows`` restricted to ``columns`` as a JSON-ready dict, or None when there is none."""
    return _records(rows[columns].head(1))[0] if len(rows) else None


def read_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables :func:`write_tables` wrote into ``run_dir``, keyed by :data:`TABLE_NAMES`, as it was given them.

    ``summary.json`` gives back what the CSV files cannot hold: each table's ``attrs[SKIPPED]``
    and ``attrs[WARNINGS]``, the ANOVA's type of sums of squares, and which columns are labels
    (grid dimensions whose levels are strings, ``metric``, ``term``, and ``n_per_cell``, which
    reads "2" or "2–3"), so that a dataset called ``001`` or ``NA`` stays that string. Only an
    empty cell reads as NaN (an empty note, too). Raises :class:`BenchsuiteError` naming the
    first missing file.
    """
    run_dir = Path(run_dir)
    paths = [run_dir / SUMMARY_NAME, *(run_dir / f"{name}.csv" for name in TABLE_NAMES)]
    if missing := [path for path in paths if not path.is_file()]:
        raise BenchsuiteError(f"{missing[0]} is missing; write the tables with benchsuite analyze {run_dir}.")
    document = json.loads(paths[0].read_text(encoding="utf-8"))
    labels = {"metric", "term", "n_per_cell"} | {
        dim for dim, levels in document["design"]["grid"].items() if any(isinstance(level, str) for level in levels)
    }
    tables = {}
    for name in TABLE_NAMES:
        table = pd.read_csv(run_dir / f"{name}.csv", dtype=dict.fromkeys(labels, str), keep_default_na=False, na_values=[""])
        for key in (SKIPPED, WARNINGS):
            if name in document.get(key, {}):
                table.attrs[key] = document[key][name]
        tables[name] = table
    if document["anova_type"] is not None:
        tables["anova"].attrs[SS_TYPE] = document["anova_type"]
    return tables
