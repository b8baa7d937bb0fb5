"""`benchsuite compare`: two cubes aligned on their cells, per-metric differences tested across seeds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from benchsuite.analysis.compare import compare_cubes, compare_runs, format_comparison
from benchsuite.results.cube import AXES, BETTER, CELL_KEY, CUBE_NAME, ENGINE, METRIC
from benchsuite.results.errors import BenchsuiteError

DATASETS, THETAS = ["shapes", "iso"], [0.0, 45.0, 90.0]


def cube(seeds: list[int], shift: float = 0.0, noise_seed: int = 0, extra_dim: bool = False) -> xr.Dataset:
    """A cube with an image metric (higher is better), a cell metric (lower is better) and one without a direction.

    Values depend on dataset, theta and seed; ``shift`` raises the first and third and lowers the second.
    """
    rng = np.random.default_rng(noise_seed)
    coords = {"dataset": DATASETS, "theta": THETAS, "seed": seeds, "method": ["moco"], "encoder": ["cnn"]}
    shape = tuple(len(v) for v in coords.values())
    seed_effect = np.asarray(seeds, dtype=float).reshape(1, 1, -1, 1, 1) * 0.05
    base = np.arange(len(DATASETS)).reshape(-1, 1, 1, 1, 1) * 0.2 + np.asarray(THETAS).reshape(1, -1, 1, 1, 1) / 900
    per_image = (base + seed_effect + shift)[..., None] + rng.normal(0, 0.02, (*shape, 4))
    variables = {
        "dice": ((*AXES, "image"), per_image, {"role": METRIC, "scope": "image", BETTER: "higher"}),
        "final_loss": (
            AXES,
            (base + seed_effect - shift)[...] + rng.normal(0, 0.01, shape),
            {"role": METRIC, "scope": "cell", BETTER: "lower"},
        ),
        "norm": (AXES, (base + seed_effect + shift)[...] + rng.normal(0, 0.01, shape), {"role": METRIC, "scope": "cell"}),
        CELL_KEY: (AXES, np.full(shape, "key", dtype=object).astype(str), {"role": "provenance"}),
    }
    ds = xr.Dataset(variables, coords={**coords, "image": np.arange(4)})
    if extra_dim:
        ds = ds.expand_dims(strength=[0.5])
        ds["strength"].attrs["role"] = "sweep"
    return ds


def per_seed(ds: xr.Dataset, metric: str) -> pd.Series:
    values = ds[metric].mean("image") if "image" in ds[metric].dims else ds[metric]
    return values.mean([d for d in AXES if d != "seed"]).to_series()


def test_matching_cells_are_compared_by_a_paired_test_over_seeds():
    a, b = cube([0, 1, 2, 3]), cube([0, 1, 2, 3], shift=0.1, noise_seed=1)
    result = compare_cubes(a, b)
    row = result.table.set_index("metric").loc["dice"]
    sa, sb = per_seed(a, "dice"), per_seed(b, "dice")
    want = stats.ttest_rel(sb.values, sa.values)
    assert row.test == "paired" and row.seeds == 4
    np.testing.assert_allclose([row.a, row.b, row.difference], [sa.mean(), sb.mean(), (sb - sa).mean()], rtol=1e-12)
    np.testing.assert_allclose([row.ci_low, row.ci_high], list(want.confidence_interval()), rtol=1e-9)
    np.testing.assert_allclose(row.p, want.pvalue, rtol=1e-9)
    assert row.p < 0.01 and row.ci_low > 0
    loss = result.table.set_index("metric").loc["final_loss"]
    assert loss.difference < 0 and loss.ci_high < 0
    assert result.shared_cells == a[CELL_KEY].size and not result.only_a and not result.only_b


def test_cells_in_one_run_only_are_listed_and_left_out_of_the_test():
    a, b = cube([0, 1, 2]), cube([1, 2, 3], shift=0.1)
    result = compare_cubes(a, b)
    assert {cell["seed"] for cell in result.only_a} == {0} and {cell["seed"] for cell in result.only_b} == {3}
    assert len(result.only_a) == len(DATASETS) * len(THETAS)
    row = result.table.set_index("metric").loc["dice"]
    assert row.seeds == 2 and row.test == "paired"  # seeds 1 and 2, in both
    text = format_comparison(result)
    assert "only in A" in text and "seed=0" in text and "only in B" in text


def test_runs_without_a_common_seed_get_welchs_test():
    a, b = cube([0, 1, 2]), cube([3, 4, 5], shift=0.1)
    row = compare_cubes(a, b).table.set_index("metric").loc["dice"]
    sa, sb = per_seed(a, "dice"), per_seed(b, "dice")
    want = stats.ttest_ind(sb.values, sa.values, equal_var=False)
    assert row.test == "welch" and row.seeds == "3+3"
    np.testing.assert_allclose([row.ci_low, row.ci_high], list(want.confidence_interval()), rtol=1e-9)
    np.testing.assert_allclose(row.p, want.pvalue, rtol=1e-9)


def test_runs_sharing_one_seed_are_tested_on_each_runs_seeds_apart():
    # Seed 1 alone is paired, and one difference has no spread; seeds 0, 1 and 1, 2 still do.
    a, b = cube([0, 1]), cube([1, 2], shift=0.1)
    row = compare_cubes(a, b).table.set_index("metric").loc["dice"]
    want = stats.ttest_ind(per_seed(b, "dice").values, per_seed(a, "dice").values, equal_var=False)
    assert row.test == "welch" and row.seeds == "2+2"
    np.testing.assert_allclose(row.p, want.pvalue, rtol=1e-9)


def test_metrics_only_one_run_has_are_named_not_dropped():
    a, b = cube([0, 1]), cube([0, 1]).drop_vars("norm").assign(extra=lambda ds: ds["final_loss"] * 2)
    b["extra"].attrs["role"] = METRIC
    result = compare_cubes(a, b)
    assert (result.metrics_only_a, result.metrics_only_b) == (["norm"], ["extra"])
    text = format_comparison(result)
    assert "metrics only in A (not compared): norm" in text and "metrics only in B (not compared): extra" in text


def test_the_settings_the_runs_differ_in_are_listed_by_their_suite_path():
    a, b = cube([0, 1]), cube([0, 1])
    a.attrs |= {"suite_yaml": "name: s\nmethods: {moco: {params: {epochs: 3}}}\nseeds: [0, 1]\n", "device": "cpu"}
    b.attrs |= {"suite_yaml": "name: s\nmethods: {moco: {params: {epochs: 8, lr: 0.1}}}\nseeds: [0, 1]\n", "device": "cpu"}
    a.attrs["versions"], b.attrs["versions"] = '{"torch": "2.13.0"}', '{"torch": "2.14.1"}'
    result = compare_cubes(a, b)
    assert result.settings == [
        ("methods.moco.params.epochs", "3", "8"),
        ("version of torch", "2.13.0", "2.14.1"),
        ("methods.moco.params.lr", "(not set)", "0.1"),
    ]
    lines = format_comparison(result).splitlines()
    assert lines[:2] == ["A = A", "B = B"]
    assert "settings that differ (3): methods.moco.params.epochs: 3 -> 8; version of torch: 2.13.0 -> 2.14.1;" in lines[3]


def test_one_seed_gives_the_difference_without_an_interval():
    row = compare_cubes(cube([0]), cube([0], shift=0.1)).table.set_index("metric").loc["dice"]
    assert row.difference == pytest.approx(0.1, abs=0.05) and np.isnan(row.ci_low) and np.isnan(row.p)


def test_a_difference_significant_at_the_level_is_marked_in_the_first_column():
    text = format_comparison(compare_cubes(cube([0, 1, 2, 3]), cube([0, 1, 2, 3], shift=0.1, noise_seed=1)))
    dice = next(line for line in text.splitlines() if " dice " in line)
    loss = next(line for line in text.splitlines() if " final_loss " in line)
    assert dice.lstrip().startswith("+") and loss.lstrip().startswith("-")


@pytest.mark.parametrize(("shift", "dice", "loss"), [(0.1, "better", "better"), (-0.1, "worse", "worse"), (0.0, "", "")])
def test_a_significant_difference_is_better_or_worse_by_the_metrics_direction(shift, dice, loss):
    # Dice up is better, the loss down is better; the norm has no direction, so no verdict. With no
    # shift the runs are the same run, so nothing differs.
    result = compare_cubes(cube([0, 1, 2, 3]), cube([0, 1, 2, 3], shift=shift, noise_seed=1 if shift else 0))
    table = result.table.set_index("metric")
    assert list(table["better"]) == ["higher", "lower", ""]
    assert (table.loc["dice", "verdict"], table.loc["final_loss", "verdict"], table.loc["norm", "verdict"]) == (dice, loss, "")
    lines = format_comparison(result).splitlines()
    for metric, word in (("dice", dice), ("final_loss", loss)):
        assert next(line for line in lines if f" {metric} " in line).endswith(word)


def test_a_cube_without_cell_keys_is_refused_by_name():
    with pytest.raises(BenchsuiteError, match=r"^B has no cell_key variable, so its cells cannot be matched"):
        compare_cubes(cube([0, 1]), cube([0, 1]).drop_vars(CELL_KEY))


def test_cubes_of_different_studies_are_refused():
    with pytest.raises(BenchsuiteError, match="different grid dimensions"):
        compare_cubes(cube([0, 1]), cube([0, 1], extra_dim=True))


def write(ds: xr.Dataset, folder):
    folder.mkdir(parents=True)
    ds.to_netcdf(folder / CUBE_NAME, engine=ENGINE)
    return folder


def test_the_command_prints_the_table_writes_the_csv_and_compares_each_run_with_the_first(tmp_path):
    a = write(cube([0, 1, 2]), tmp_path / "a")
    b = write(cube([0, 1, 2], shift=0.1), tmp_path / "b")
    c = write(cube([0, 1, 2], shift=-0.1), tmp_path / "c")
    done = subprocess.run(
        [sys.executable, "-m", "benchsuite", "compare", str(a), str(b), str(c), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"B = {b}" in done.stdout and f"B = {c}" in done.stdout
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert len(table) == 6 and set(table["run_b"]) == {str(b), str(c)}
    assert list(table.columns[:3]) == ["run_a", "run_b", "metric"]
    one = subprocess.run([sys.executable, "-m", "benchsuite", "compare", str(a)], capture_output=True, text=True)
    assert one.returncode == 2 and "at least two run directories" in one.stderr


def test_compare_runs_needs_two_runs(tmp_path):
    with pytest.raises(BenchsuiteError, match="at least two"):
        compare_runs([tmp_path], out=tmp_path)
