"""The report's other figures: the saliency gallery and the signature similarity heat maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from benchsuite.report.figures import saliency_gallery, similarity_matrices
from benchsuite.results.cube import IDENTICAL_VIEWS, SALIENCY_EXAMPLE


def test_the_gallery_says_a_cell_with_identical_views_ran_and_has_no_map_because_it_is_undefined(report):
    cube = report.cube.copy(deep=True)
    cube[IDENTICAL_VIEWS].loc[{"theta": 45}] = 1
    cube[SALIENCY_EXAMPLE].loc[{"example_theta": 45}] = np.nan
    cube[SALIENCY_EXAMPLE].loc[{"example_theta": 90, "dataset": cube["dataset"].values[0]}] = np.nan  # ran, kept no map
    figure = saliency_gallery(cube)
    panels = figure.axes[: cube.sizes["dataset"] * (cube.sizes["theta"] + 1)]
    by_panel = [[text.get_text() for text in ax.texts] for ax in panels]
    # Row by row: the image alone, θ = 45 (identical views), θ = 90 (no example in the first dataset only).
    assert by_panel == [[], ["identical views:\nmap undefined"], ["no map stored"], [], ["identical views:\nmap undefined"], []]


def _maps_over_every_theta(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` as a store wrote it before only the detailed angles kept maps: over θ, NaN at every other angle."""
    maps = cube[SALIENCY_EXAMPLE].rename(example_theta="theta").reindex(theta=cube["theta"])
    return cube.drop_vars([SALIENCY_EXAMPLE, "example_theta"]).assign({SALIENCY_EXAMPLE: maps})


@pytest.mark.parametrize("layout", ["example_theta", "theta"])
def test_the_gallery_spreads_at_most_six_of_the_angles_that_kept_examples(dense_cube, layout):
    cube = dense_cube if layout == "example_theta" else _maps_over_every_theta(dense_cube)
    figure = saliency_gallery(cube)
    # Examples at every 30° of 360 angles; θ = 0 has identical views, so it has no map but is shown with its reason.
    assert [ax.get_title() for ax in figure.axes[:7]] == ["image, mask", *(f"θ = {t}°" for t in (0, 60, 120, 210, 270, 330))]
    notes = [text.get_text() for ax in figure.axes for text in ax.texts]
    assert notes == ["identical views:\nmap undefined"] * cube.sizes["dataset"]


SIMILARITY = pd.DataFrame(
    {
        "metric": ["dice"] * 3 + ["auroc"],
        "curve_a": ["shapes/moco_v2", "shapes/moco_v2", "brain/moco_v2", "shapes/moco_v2"],
        "curve_b": ["brain/moco_v2", "noise/moco_v2", "noise/moco_v2", "brain/moco_v2"],
        "cosine": [0.9, -0.2, 0.1, 0.5],
        "l2": [0.1, 0.8, 0.7, 0.3],
    }
)


def test_the_signature_similarity_figure_is_a_symmetric_heat_map_of_cosines_per_metric():
    figure = similarity_matrices(SIMILARITY)
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["dice", "auroc"]
    dice = panels[0].images[0].get_array()
    assert np.asarray(dice) == pytest.approx(np.array([[1.0, 0.9, -0.2], [0.9, 1.0, 0.1], [-0.2, 0.1, 1.0]]))
    assert [label.get_text() for label in panels[0].get_xticklabels()] == ["shapes/moco_v2", "brain/moco_v2", "noise/moco_v2"]
    assert sorted(text.get_text() for text in panels[0].texts) == sorted(["1.00"] * 3 + ["0.90", "-0.20", "0.10"] * 2)
    assert np.asarray(panels[1].images[0].get_array()) == pytest.approx(np.array([[1.0, 0.5], [0.5, 1.0]]))
