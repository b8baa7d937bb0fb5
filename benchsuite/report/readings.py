"""What the report says in words: which metric is the outcome, which study terms it reads, and each term's
reading from the ANOVA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from benchsuite.analysis.settings import HARMONIC_TERM, analysis_options, study_terms
from benchsuite.results.cube import INTERACTION, PLACEHOLDER_NEGATIVES, THETA, outcome

ALPHA = 0.05

ANOVA_FORMATS = {"sum_sq": ".4g", "df": "g", "F": ".2f", "p": ".2g", "partial_eta_sq": ".3f"}
"""How the ANOVA table prints its numbers; the readings print F, p and partial η² the same way."""


@dataclass(frozen=True)
class Reading:
    """A plain-language line about one metric's interaction term (θ × dataset, ...), with its verdict at :data:`ALPHA`."""

    text: str
    verdict: str = ""
    verdict_class: str = ""


def outcome_notes(cube: xr.Dataset) -> list[str]:
    """The summary's lines on what to read: which metric is the outcome, and cells whose training loss reads low.

    A cell that ended training with part of its method's negatives still placeholders (MoCo's
    queue not yet filled by real keys, ``placeholder_negatives``) has a lower training loss than
    real keys would give, the more so the smaller its dataset.
    """
    name = outcome(cube)
    if name is None:
        notes = ["The suite names no outcome (its outcome key), so every metric below is read alike."]
    else:
        notes = [f"The outcome is {name}, as the suite names it (its outcome key); the other metrics are diagnostics."]
    if PLACEHOLDER_NEGATIVES in cube:
        shares = np.asarray(cube[PLACEHOLDER_NEGATIVES].values, dtype=float).ravel()
        shares = shares[np.isfinite(shares)]
        unfilled = shares[shares > 0]
        if unfilled.size:
            notes.append(
                f"{unfilled.size} of {shares.size} cells ended training with {unfilled.min():.0%} to {unfilled.max():.0%} "
                f"of their negatives still random placeholders, not keys of training images ({PLACEHOLDER_NEGATIVES}: "
                "MoCo's queue not yet filled). Their final_loss is lower than real keys would give, the more so the "
                "smaller the dataset, so it does not compare datasets; heldout_infonce does."
            )
    return notes


def varying_terms(cube: xr.Dataset) -> list[str]:
    """The interactions the report reads: the analysis' study terms (:func:`benchsuite.analysis.settings.study_terms`,
    ``harmonics:dataset`` for θ on a dense grid) whose factor (θ, a swept parameter) varies in
    ``cube``, or θ's when none does, so that its reading says why the ANOVA has no such term."""
    terms = study_terms(cube, analysis_options(cube))
    varying = [term for term in terms if cube.sizes[_FACTOR.get(term.split(":")[0], term.split(":")[0])] > 1]
    return varying or [terms[0]]


_FACTOR = {HARMONIC_TERM: THETA}
"""The cube dimension of a term's first factor, where the term names it otherwise."""


def term_label(term: str) -> str:
    """A term as the report writes it: ``theta:dataset`` is ``θ × dataset``, ``harmonics:dataset`` is
    ``θ's harmonics × dataset``, ``strength:dataset`` is ``strength × dataset``."""
    spelt = {THETA: "θ", HARMONIC_TERM: "θ's harmonics"}
    return " × ".join(spelt.get(factor, factor) for factor in term.split(":"))


def interaction_reading(anova: pd.DataFrame, metric: str, term: str = INTERACTION) -> Reading:
    """The ``term`` line of ``metric`` in a long-form ANOVA table, and whether p < :data:`ALPHA`.

    Says so in words when the table has no such metric, or the metric no such term (its factor
    or the dataset has a single level).
    """
    metric_rows = anova[anova["metric"] == metric]
    if metric_rows.empty:
        return Reading("Not in the ANOVA table (the analysis skipped this metric; its warning says why).")
    rows = metric_rows[metric_rows["term"] == term]
    label = term_label(term)
    if rows.empty:
        factor = label.split(" × ")[0]
        return Reading(f"The ANOVA has no {label} term: {factor} or the dataset has a single level.")
    row = rows.iloc[0]
    f, p, eta = (format(row[c], ANOVA_FORMATS[c]) for c in ("F", "p", "partial_eta_sq"))
    text = f"{label} interaction: F={f}, p={p}, partial η²={eta}"
    if row["p"] < ALPHA:
        return Reading(text, f"significant at {ALPHA:g}", "significant")
    return Reading(text, f"not significant at {ALPHA:g}", "not-significant")
