"""The report's θ-curves: the seed band, the interaction figure's lines, axes and polar panel."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_rgba
from statsmodels.stats.weightstats import DescrStatsW

from benchsuite.report.curves import interaction_figure, seed_band
from tests.results.test_summary import _cube as synthetic_cube


def test_seed_band_is_the_t_interval_of_the_seed_means(report):
    band = seed_band(report.cube, "dice")
    assert len(band) == report.cube.sizes["dataset"] * report.cube.sizes["theta"]
    for row in band.itertuples():
        per_seed = report.cube["dice"].sel(dataset=row.dataset, theta=row.theta).mean("image").values.ravel()
        low, high = DescrStatsW(per_seed).tconfint_mean(alpha=0.05)
        assert (row.mean, row.ci_low, row.ci_high, row.n_seeds) == pytest.approx((per_seed.mean(), low, high, 2))


def test_seed_band_has_no_interval_with_a_single_seed(report):
    band = seed_band(report.cube.isel(seed=[0]), "final_loss")
    assert band["ci_low"].isna().all() and band["ci_high"].isna().all()
    assert band["mean"].to_numpy() == pytest.approx(report.cube["final_loss"].isel(seed=0).values.ravel())


def test_the_y_axis_says_which_way_is_better_where_the_metric_says_so(report):
    band = seed_band(report.cube, "dice")
    assert interaction_figure(band, "dice", "higher").axes[0].get_ylabel() == "dice (higher is better)"
    assert interaction_figure(band, "dice").axes[0].get_ylabel() == "dice"


def test_with_datasets_and_methods_a_method_keeps_its_colour_and_a_dataset_its_line_style():
    one = synthetic_cube()
    per_cell = [name for name, variable in one.data_vars.items() if "method" in variable.dims]
    cube = xr.concat([one, one.assign_coords(method=["simclr"])], dim="method", data_vars=per_cell)
    lines = interaction_figure(seed_band(cube, "dice"), "dice").legends[0].get_lines()
    styles = {line.get_label(): (to_rgba(line.get_color()), line.get_linestyle(), line.get_marker()) for line in lines}
    assert list(styles) == ["shapes / moco_v2", "shapes / simclr", "brain / moco_v2", "brain / simclr"]
    for method in ("moco_v2", "simclr"):
        assert styles[f"shapes / {method}"][0] == styles[f"brain / {method}"][0]
    assert styles["shapes / moco_v2"][0] != styles["shapes / simclr"][0]
    for dataset in ("shapes", "brain"):
        assert styles[f"{dataset} / moco_v2"][1:] == styles[f"{dataset} / simclr"][1:]
    assert styles["shapes / moco_v2"][1:] != styles["brain / moco_v2"][1:]


def test_the_y_axis_holds_narrow_bands_whole_and_cuts_a_wide_one_with_a_note(report):
    means = seed_band(report.cube, "dice")["mean"]
    span = means.max() - means.min()
    narrow = seed_band(report.cube, "dice").assign(ci_low=means - 0.2 * span, ci_high=means + 0.2 * span)
    axes = interaction_figure(narrow, "dice").axes[0]
    low, high = axes.get_ylim()
    assert low < narrow["ci_low"].min() and narrow["ci_high"].max() < high
    assert not axes.texts

    # One band as wide as two seeds that disagree can make it (t(0.975, 1) = 12.7): the means keep the axis.
    wide = narrow.assign(ci_low=narrow["ci_low"] - 50 * span)
    axes = interaction_figure(wide, "dice").axes[0]
    low, high = axes.get_ylim()
    assert means.min() - span < low < means.min() and narrow["ci_high"].max() < high < means.max() + span
    assert [text.get_text() for text in axes.texts] == ["some bands run past the axis"]


def test_polar_curve_closes_at_360_degrees_when_its_angles_cover_the_circle_evenly():
    cube = synthetic_cube()  # θ = 0, 90, 180, 270
    figure = interaction_figure(seed_band(cube, "dice"), "dice")
    angles, values = figure.axes[1].lines[0].get_data()
    assert list(np.rad2deg(angles)) == pytest.approx([0, 90, 180, 270, 360])
    assert values[-1] == values[0]


@pytest.mark.parametrize("thetas", [[0, 1, 2], [1, 2, 3]], ids=["0-90-180", "90-180-270"])
def test_polar_curve_is_not_closed_across_the_part_of_the_circle_without_angles(thetas):
    cube = synthetic_cube().isel(theta=thetas)
    for line in interaction_figure(seed_band(cube, "dice"), "dice").axes[1].lines:
        angles, _ = line.get_data()
        assert list(np.rad2deg(angles)) == pytest.approx(cube["theta"].values)


def test_a_dense_curve_is_a_line_without_a_marker_or_tick_per_angle(dense_cube):
    figure = interaction_figure(seed_band(dense_cube, "final_loss"), "final_loss")
    line_axes, polar_axes = figure.axes
    assert {line.get_marker() for line in line_axes.lines + polar_axes.lines} <= {"", "None"}
    assert list(line_axes.get_xticks()) == [0, 45, 90, 135, 180, 225, 270, 315]
    assert [len(line.get_xdata()) for line in line_axes.lines] == [360] * dense_cube.sizes["dataset"]
    # 360 angles 1° apart cover the circle: the polar curve closes at 360°.
    assert [len(line.get_xdata()) for line in polar_axes.lines] == [361] * dense_cube.sizes["dataset"]
