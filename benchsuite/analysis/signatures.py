"""Curve signatures, as the follow-up study reads them: one θ-curve per (dataset, encoder, method).

A signature is a series' metric(θ), the mean over seeds and images of every cell of one
dataset, encoder, method (and swept value). Two tables follow from them:

- ``signature_similarity``: for every pair of signatures of a metric, the cosine similarity of
  their shapes and the L2 distance between them;
- ``signature_prediction``: the follow-up's Appendix C, whether a signature tells which dataset
  it was measured on. A nearest-neighbour classifier is trained on the signatures of some
  encoder-method combinations and predicts the dataset of the others' signatures.

What the follow-up's text leaves open, and what is chosen here (also in docs/analysis.md):

- **Shape, not level, for the cosine.** Each curve is centred (its mean over θ removed) before
  the cosine, which is then the Pearson correlation of the two curves over θ. Raw metric curves
  are all positive (AUROC near 0.7 at every θ), so their cosine is close to 1 for any pair and
  says nothing. The L2 distance, ``‖a − b‖₂`` over the angles, keeps the level.
- **Angles without a value are left out** of every curve of that metric (θ = 0 for saliency
  metrics), so all curves of a metric have the same angles.
- **The classifier is 1-nearest-neighbour by that cosine** (the training curve of the most
  similar shape lends its dataset), the simplest classifier that uses the similarity the table
  reports.
- **Which combinations train.** Appendix C trains on ten encoder-method combinations and tests
  on the other six (of 16), without saying which. Every combination is held out once: fold j
  tests the h combinations j, j + 1, … (cyclically, in grid order) and trains on the rest, with
  h = round(6/16 × C) of C combinations (at least 1, at most C − 1). With C = 16 each of the 16
  folds is a 10/6 split; with C = 2 it is leave-one-combination-out. A swept value counts as
  part of the combination. Fewer than two combinations, or fewer than two datasets, skip the
  prediction with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import distance

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.periodicity import series_keys
from benchsuite.results.cube import DATASET, ENCODER, METHOD, THETA, metric_names
from benchsuite.results.errors import BenchsuiteError

SIMILARITY_COLUMNS = ["metric", "curve_a", "curve_b", "cosine", "l2"]
PREDICTION_COLUMNS = ["metric", "fold", "held_out", "n_train", "n_test", "correct", "accuracy", "chance"]
HELD_OUT_SHARE = 6 / 16
"""The share of encoder-method combinations Appendix C tests on (six of sixteen)."""


class SignatureError(BenchsuiteError, ValueError):
    """The signatures cannot support the prediction; the message says why."""


@dataclass(frozen=True)
class Signatures:
    """The θ-curves of one metric: ``curves`` [C, T] at ``thetas``, one row per curve of ``keys`` (a frame of its levels)."""

    curves: np.ndarray
    thetas: np.ndarray
    keys: pd.DataFrame

    @property
    def labels(self) -> list[str]:
        """Each curve as ``"dataset=shapes encoder=small_cnn method=moco"`` (then any swept parameter)."""
        return [" ".join(f"{k}={v}" for k, v in row.items()) for row in self.keys.to_dict(orient="records")]


def signature_keys(cube: xr.Dataset) -> list[str]:
    """The dimensions that name a signature, in the order its label reads: dataset, encoder, method, swept parameters.

    A swept parameter with a single level is left out, so that it changes no label.
    """
    swept = [k for k in series_keys(cube) if k not in (DATASET, ENCODER, METHOD) and cube.sizes[k] > 1]
    return [DATASET, ENCODER, METHOD, *swept]


def signatures(cube: xr.Dataset, metric: str) -> Signatures:
    """Every signature of ``metric`` in ``cube``: cell means averaged over seeds, angles without a value dropped."""
    keys = signature_keys(cube)
    means = cell_means(cube, metric).groupby([*keys, THETA], sort=True)["value"].mean()
    table = means.unstack(THETA).dropna(axis=1, how="any")
    return Signatures(table.to_numpy(dtype=float), table.columns.to_numpy(dtype=float), table.index.to_frame(index=False))


def cosine_matrix(curves: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of mean-centred ``curves`` [C, T]; NaN for a flat curve."""
    centred = curves - curves.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = centred / np.where(norms > 0, norms, np.nan)[:, None]
    return unit @ unit.T


def l2_matrix(curves: np.ndarray) -> np.ndarray:
    """Euclidean distance ``‖a − b‖₂`` between every pair of ``curves`` [C, T]."""
    return distance.cdist(curves, curves)  # pairwise differences, not a Gram matrix, which cancels near 0


def similarity_table(cube: xr.Dataset, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """``metric, curve_a, curve_b, cosine, l2`` for every pair of signatures a before b (in grid order) of each metric.

    The matrix is symmetric with cosine 1 and l2 0 on its diagonal, so the table holds each
    pair once.
    """
    blocks = []
    for name in metric_names(cube) if metrics is None else metrics:
        found = signatures(cube, name)
        if len(found.curves) < 2:
            continue
        a, b = np.triu_indices(len(found.curves), k=1)
        labels = np.array(found.labels, dtype=object)
        blocks.append(
            pd.DataFrame(
                {
                    "metric": name,
                    "curve_a": labels[a],
                    "curve_b": labels[b],
                    "cosine": cosine_matrix(found.curves)[a, b],
                    "l2": l2_matrix(found.curves)[a, b],
                }
            )
        )
    return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(columns=SIMILARITY_COLUMNS)


def held_out_count(n_combinations: int) -> int:
    """How many of ``n_combinations`` encoder-method combinations a fold tests on: six of sixteen, scaled."""
    return min(n_combinations - 1, max(1, round(HELD_OUT_SHARE * n_combinations)))


def predict_datasets(found: Signatures) -> pd.DataFrame:
    """The folds of the dataset prediction from ``found``'s signatures (see the module's notes).

    One row per fold: ``fold, held_out`` (the combinations tested, ``"encoder=… method=…"``
    joined by ``"; "``), ``n_train, n_test, correct, accuracy`` and ``chance`` (1 / datasets).
    Raises :class:`SignatureError` with fewer than two datasets or combinations.
    """
    datasets = found.keys[DATASET].to_numpy()
    combination_keys = [k for k in found.keys.columns if k != DATASET]
    combination = found.keys.groupby(combination_keys, sort=False).ngroup().to_numpy()
    n_combinations, n_datasets = int(combination.max()) + 1, len(np.unique(datasets))
    if n_datasets < 2:
        raise SignatureError(f"the cube has {n_datasets} dataset, so there is nothing to tell apart.")
    if n_combinations < 2:
        raise SignatureError(
            "every signature comes from one encoder-method combination, so none is left to train on: "
            "the prediction needs two or more (Appendix C has 16)."
        )
    first_rows = np.unique(combination, return_index=True)[1]
    names = [" ".join(f"{k}={found.keys.at[i, k]}" for k in combination_keys) for i in first_rows]
    similarity = cosine_matrix(found.curves)
    h = held_out_count(n_combinations)
    rows = []
    for fold in range(n_combinations):
        tested = [(fold + i) % n_combinations for i in range(h)]
        test = np.isin(combination, tested)
        train = ~test
        nearest = np.nanargmax(np.nan_to_num(similarity[np.ix_(test, train)], nan=-np.inf), axis=1)
        correct = int(np.sum(datasets[train][nearest] == datasets[test]))
        rows.append(
            {
                "fold": fold,
                "held_out": "; ".join(names[c] for c in tested),
                "n_train": int(train.sum()),
                "n_test": int(test.sum()),
                "correct": correct,
                "accuracy": correct / int(test.sum()),
                "chance": 1 / n_datasets,
            }
        )
    return pd.DataFrame(rows)


def prediction_unsupported(cube: xr.Dataset) -> str | None:
    """Why ``cube``'s grid cannot support the dataset prediction (one dataset, one encoder-method combination); None if it can."""
    combinations = int(np.prod([cube.sizes[k] for k in signature_keys(cube) if k != DATASET]))
    if cube.sizes[DATASET] < 2:
        return "needs two or more datasets to tell apart"
    if combinations < 2:
        return "needs the curves of two or more encoder-method combinations, to train on some and test on the others"
    return None


def prediction_table(cube: xr.Dataset, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`predict_datasets` of every metric's signatures, with a ``metric`` column first.

    Raises :class:`SignatureError` with :func:`prediction_unsupported`'s reason when the grid
    cannot support it: that holds for every metric alike.
    """
    if (reason := prediction_unsupported(cube)) is not None:
        raise SignatureError(f"the signature prediction {reason}.")
    blocks = []
    for name in metric_names(cube) if metrics is None else metrics:
        found = signatures(cube, name)
        if len(found.curves) == 0:
            warnings.warn(f"signature prediction of metric {name!r} skipped: every cell is NaN.", stacklevel=2)
            continue
        blocks.append(predict_datasets(found).assign(metric=name)[PREDICTION_COLUMNS])
    return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(columns=PREDICTION_COLUMNS)
