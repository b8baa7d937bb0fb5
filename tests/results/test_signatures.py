"""Curve signatures: their similarity against numpy, and the dataset prediction against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.neighbors import KNeighborsClassifier

from benchsuite.analysis.signatures import (
    SIMILARITY_COLUMNS,
    Signatures,
    cosine_matrix,
    held_out_count,
    l2_matrix,
    predict_datasets,
    prediction_table,
    prediction_unsupported,
    signatures,
    similarity_table,
)
from benchsuite.results.synthetic import synthetic_cube

THETAS = np.arange(0.0, 360.0, 5.0)


def _planted(datasets: int = 4, encoders: int = 8, methods: int = 2, noise: float = 0.03, one_shape: bool = False) -> Signatures:
    """One curve per dataset, encoder and method: the dataset's shape (or all cos 4θ), a level per encoder-method, noise."""
    rng = np.random.default_rng(5)
    radians = np.deg2rad(THETAS)
    shapes = [np.cos(4 * radians), np.sin(2 * radians), np.cos(radians), np.cos(3 * radians)]
    if one_shape:
        shapes = [shapes[0]] * len(shapes)
    rows, curves = [], []
    for d in range(datasets):
        for e in range(encoders):
            for m in range(methods):
                level = 0.4 + 0.05 * e + 0.1 * m
                curves.append(level + 0.1 * shapes[d] + rng.normal(0, noise, len(THETAS)))
                rows.append({"dataset": f"set{d}", "encoder": f"enc{e}", "method": f"m{m}"})
    return Signatures(np.array(curves), THETAS, pd.DataFrame(rows))


def test_the_cosine_is_numpys_correlation_of_the_curves() -> None:
    curves = _planted(datasets=2, encoders=2, methods=1).curves
    np.testing.assert_allclose(cosine_matrix(curves), np.corrcoef(curves), atol=1e-12)


def test_the_l2_distance_is_numpys_norm_of_the_difference() -> None:
    curves = _planted(datasets=2, encoders=2, methods=1).curves
    expected = np.linalg.norm(curves[:, None, :] - curves[None, :, :], axis=2)
    np.testing.assert_allclose(l2_matrix(curves), expected, atol=1e-9)


def test_signatures_average_seeds_and_images_and_drop_angles_without_values() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=3, encoders=2, images=4)
    found = signatures(cube, "auroc")
    assert found.labels[0] == "dataset=set0 encoder=encoder0 method=method0"
    assert list(found.thetas) == list(cube["theta"].values[1:])  # θ = 0 has no saliency
    expected = (
        cube["auroc"].sel({"dataset": "set1", "encoder": "encoder1", "method": "method0"}).mean(["seed", "image"]).values[1:]
    )
    np.testing.assert_allclose(found.curves[3], expected, rtol=1e-6)


def test_the_similarity_table_holds_each_pair_once_with_its_labels() -> None:
    cube = synthetic_cube(datasets=2, thetas=36, seeds=1, encoders=2, images=2)
    table = similarity_table(cube, metrics=["final_loss"])
    assert list(table.columns) == SIMILARITY_COLUMNS
    assert len(table) == 4 * 3 // 2
    pairs = table.set_index(["curve_a", "curve_b"])
    first = "dataset=set0 encoder=encoder0 method=method0"
    assert pairs.at[(first, "dataset=set0 encoder=encoder1 method=method0"), "cosine"] > 0.8  # both follow cos 4θ
    assert abs(pairs.at[(first, "dataset=set1 encoder=encoder0 method=method0"), "cosine"]) < 0.5  # set1 is flat


@pytest.mark.parametrize(("combinations", "held_out"), [(16, 6), (8, 3), (4, 2), (3, 1), (2, 1)])
def test_appendix_cs_six_of_sixteen_scales_to_smaller_grids(combinations: int, held_out: int) -> None:
    assert held_out_count(combinations) == held_out


def test_the_prediction_trains_on_ten_combinations_and_tests_on_six() -> None:
    folds = predict_datasets(_planted())
    assert len(folds) == 16
    assert (folds["n_train"] == 4 * 10).all() and (folds["n_test"] == 4 * 6).all()
    assert folds.loc[0, "held_out"].split("; ")[:2] == ["encoder=enc0 method=m0", "encoder=enc0 method=m1"]
    assert (folds["accuracy"] == 1.0).all() and (folds["chance"] == 0.25).all()


def test_each_fold_predicts_as_scikit_learns_nearest_neighbour_by_cosine() -> None:
    found = _planted(noise=0.2)  # noisy enough to get some wrong
    centred = found.curves - found.curves.mean(axis=1, keepdims=True)
    combination = found.keys.groupby(["encoder", "method"], sort=False).ngroup().to_numpy()
    folds = predict_datasets(found)
    for fold in range(16):
        test = np.isin(combination, [(fold + i) % 16 for i in range(6)])
        classifier = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(centred[~test], found.keys["dataset"][~test])
        correct = int(np.sum(classifier.predict(centred[test]) == found.keys["dataset"][test].to_numpy()))
        assert folds.loc[fold, "correct"] == correct
    assert 0.25 < folds["accuracy"].mean() < 1.0


def test_datasets_from_one_generator_are_told_apart_at_chance() -> None:
    folds = predict_datasets(_planted(one_shape=True))
    assert folds["accuracy"].mean() < 0.5  # chance is 0.25


def test_one_combination_leaves_nothing_to_train_on_and_says_so() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=1, images=2)
    assert "two or more encoder-method combinations" in prediction_unsupported(cube)
    two_encoders = xr.concat([cube, cube.assign_coords(encoder=["other"])], "encoder", data_vars="minimal")
    assert prediction_unsupported(two_encoders) is None
    with pytest.raises(ValueError, match="two or more encoder-method combinations"):
        prediction_table(cube)
