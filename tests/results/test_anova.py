"""The ANOVA over the results cube: cell means, the model, the long table and its rendering."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import xarray as xr
from scipy import stats

from benchsuite.analysis.anova import SS_TYPE, AnovaError, anova, anova_table, cell_means, format_anova

GRID = ("dataset", "theta", "seed", "method", "encoder")
TWO_WAY = {"theta": [0.0, 45.0, 90.0], "dataset": ["a", "b"]}
STRENGTHS = [0.25, 0.5, 1.0]
SWEEP = {"role": "sweep", "path": "augmentation.params.strength"}
"""The attributes the store gives the coordinate of a swept parameter (here ``strength``, after the grid's dims)."""


def _cube(dice: np.ndarray, final_loss: np.ndarray | None = None) -> xr.Dataset:
    """A results cube laid out as the store writes it, around a per-image ``dice`` array.

    ``dice`` has dims (dataset, theta, seed, method, encoder, image). The cube also holds a
    cell-scope metric, a training curve and a wall time, the last two with non-metric roles.
    """
    n_dataset, n_theta, n_seed, n_method, n_encoder, n_image = dice.shape
    coords = {
        "dataset": [f"set{i}" for i in range(n_dataset)],
        "theta": 45.0 * np.arange(n_theta),
        "seed": np.arange(n_seed),
        "method": [f"method{i}" for i in range(n_method)],
        "encoder": [f"encoder{i}" for i in range(n_encoder)],
        "image": np.arange(n_image),
        "epoch": np.arange(3),
    }
    grid_shape = dice.shape[:-1]
    if final_loss is None:
        final_loss = np.random.default_rng(1).normal(size=grid_shape)
    return xr.Dataset(
        {
            "dice": ((*GRID, "image"), dice, {"role": "metric", "scope": "image"}),
            "final_loss": (GRID, final_loss, {"role": "metric", "scope": "cell"}),
            "loss_curve": ((*GRID, "epoch"), np.ones((*grid_shape, 3)), {"role": "curve"}),
            "wall_time_s": (GRID, np.ones(grid_shape), {"role": "cost"}),
        },
        coords=coords,
    )


def _rotation_study(interaction: float, n_seed: int = 4) -> np.ndarray:
    """Per-image Dice for 2 datasets x 3 angles with main effects and a planted interaction.

    The interaction pattern sums to zero over each dataset and each angle, so ``interaction``
    moves only the θ x dataset term.
    """
    rng = np.random.default_rng(20240705)
    theta_effect = np.array([0.0, 0.05, 0.1])[None, :]
    dataset_effect = np.array([0.0, 0.1])[:, None]
    pattern = np.array([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])
    means = 0.5 + theta_effect + dataset_effect + interaction * pattern
    cell_noise = rng.normal(0.0, 0.02, size=(2, 3, n_seed, 1, 1, 1))
    image_noise = rng.normal(0.0, 0.05, size=(2, 3, n_seed, 1, 1, 8))
    return means[:, :, None, None, None, None] + cell_noise + image_noise


def _strength_study(interaction: float, n_theta: int = 1, n_seed: int = 4) -> xr.Dataset:
    """Per-image Dice of 2 datasets x 3 swept strengths, laid out as the store writes a sweep.

    Dice rises with strength by ``0.1 + interaction`` per unit in ``set0`` and by ``0.1 -
    interaction`` in ``set1``: with ``interaction=0.1`` it rises in one dataset and not in the
    other, with 0 it rises alike in both (a strength effect, no strength x dataset interaction).
    """
    rng = np.random.default_rng(20240706)
    slope = 0.1 + interaction * np.array([1.0, -1.0])
    means = 0.5 + slope[:, None] * np.array(STRENGTHS)[None, :]
    shape = (2, n_theta, n_seed, 1, 1, len(STRENGTHS))
    dice = (
        means[:, None, None, None, None, :, None]
        + rng.normal(0.0, 0.02, size=(*shape, 1))
        + rng.normal(0.0, 0.05, size=(*shape, 8))
    )
    return xr.Dataset(
        {"dice": ((*GRID, "strength", "image"), dice, {"role": "metric", "scope": "image"})},
        coords={
            "dataset": ["set0", "set1"],
            "theta": 45.0 * np.arange(n_theta),
            "seed": np.arange(n_seed),
            "method": ["method0"],
            "encoder": ["encoder0"],
            "strength": ("strength", STRENGTHS, SWEEP),
            "image": np.arange(8),
        },
    )


def _random_frame(rng: np.random.Generator, replicates: int, factors: dict[str, list]) -> pd.DataFrame:
    """A balanced frame with every combination of the factor levels, ``replicates`` times."""
    combos = list(itertools.product(*factors.values())) * replicates
    frame = pd.DataFrame(combos, columns=list(factors))
    frame["value"] = rng.normal(size=len(frame)) + 0.3 * (frame["theta"] / 45.0)
    return frame


# --- cell_means ----------------------------------------------------------------------------


def test_cell_means_average_images_ignoring_nan_images() -> None:
    dice = np.random.default_rng(0).uniform(size=(2, 3, 2, 1, 1, 5))
    dice[0, 1, 0, 0, 0, 3:] = np.nan  # a dataset with fewer images is NaN-padded
    frame = cell_means(_cube(dice), "dice").set_index(list(GRID))

    expected = np.nanmean(dice, axis=-1)
    for (d, t, s), value in np.ndenumerate(expected[:, :, :, 0, 0]):
        row = frame.loc[(f"set{d}", 45.0 * t, s, "method0", "encoder0")]
        assert row["value"] == pytest.approx(value)
        assert row["n_images"] == np.isfinite(dice[d, t, s, 0, 0]).sum()
    assert frame.loc[("set0", 45.0, 0, "method0", "encoder0"), "n_images"] == 3


def test_cell_means_drop_cells_that_were_not_run() -> None:
    dice = np.random.default_rng(0).uniform(size=(2, 3, 2, 1, 1, 4))
    dice[1, 2, 1] = np.nan
    frame = cell_means(_cube(dice), "dice")

    assert len(frame) == 2 * 3 * 2 - 1
    assert frame["value"].notna().all()
    not_run = (frame["dataset"] == "set1") & (frame["theta"] == 90.0) & (frame["seed"] == 1)
    assert not not_run.any()


def test_cell_means_of_a_cell_scope_metric_are_its_values() -> None:
    dice = np.zeros((2, 3, 2, 1, 1, 4))
    final_loss = np.arange(12.0).reshape(2, 3, 2, 1, 1)
    frame = cell_means(_cube(dice, final_loss), "final_loss")

    assert list(frame.columns) == [*GRID, "value"]
    assert sorted(frame["value"]) == list(np.arange(12.0))


def test_cell_means_have_a_column_per_swept_parameter_after_the_grid() -> None:
    frame = cell_means(_strength_study(interaction=0.1), "dice")
    assert list(frame.columns) == [*GRID, "strength", "value", "n_images"]
    assert len(frame) == 2 * 1 * 4 * len(STRENGTHS)


def test_cell_means_refuse_a_variable_that_is_not_a_metric() -> None:
    with pytest.raises(ValueError, match="role 'cost'"):
        cell_means(_cube(np.zeros((2, 3, 2, 1, 1, 4))), "wall_time_s")


# --- anova -------------------------------------------------------------------------------------


def test_anova_matches_hand_computed_sums_of_squares_on_a_balanced_design() -> None:
    # y[theta, dataset, replicate]: a 3 x 2 design with 2 replicates.
    y = np.array(
        [
            [[0.61, 0.58], [0.40, 0.47]],
            [[0.70, 0.74], [0.52, 0.49]],
            [[0.55, 0.51], [0.66, 0.71]],
        ]
    )
    a, b, n = y.shape
    thetas, datasets = [0.0, 45.0, 90.0], ["brats", "kvasir"]
    frame = pd.DataFrame([{"theta": thetas[i], "dataset": datasets[j], "value": y[i, j, r]} for i, j, r in np.ndindex(y.shape)])

    grand = y.mean()
    cell = y.mean(axis=2)
    theta_mean, dataset_mean = y.mean(axis=(1, 2)), y.mean(axis=(0, 2))
    ss = {
        "theta": n * b * ((theta_mean - grand) ** 2).sum(),
        "dataset": n * a * ((dataset_mean - grand) ** 2).sum(),
        "theta:dataset": n * ((cell - theta_mean[:, None] - dataset_mean[None, :] + grand) ** 2).sum(),
        "Residual": ((y - cell[:, :, None]) ** 2).sum(),
    }
    df = {
        "theta": a - 1,
        "dataset": b - 1,
        "theta:dataset": (a - 1) * (b - 1),
        "Residual": a * b * (n - 1),
    }
    ms_error = ss["Residual"] / df["Residual"]

    table = anova(frame, ["theta", "dataset"])

    assert list(table.index) == ["theta", "dataset", "theta:dataset", "Residual"]
    for term in ss:
        assert table.at[term, "sum_sq"] == pytest.approx(ss[term], rel=1e-9)
        assert table.at[term, "df"] == df[term]
    for term in ["theta", "dataset", "theta:dataset"]:
        f_value = ss[term] / df[term] / ms_error
        assert table.at[term, "F"] == pytest.approx(f_value, rel=1e-9)
        p_value = stats.f.sf(f_value, df[term], df["Residual"])
        assert table.at[term, "p"] == pytest.approx(p_value, rel=1e-6)
        eta = ss[term] / (ss[term] + ss["Residual"])
        assert table.at[term, "partial_eta_sq"] == pytest.approx(eta, rel=1e-9)
    assert np.isnan(table.at["Residual", "partial_eta_sq"])


def test_type_ii_sums_of_squares_on_an_unbalanced_design_match_nested_model_comparisons() -> None:
    rng = np.random.default_rng(3)
    frame = _random_frame(rng, 3, TWO_WAY)
    frame = frame.drop(index=[0, 7, 8]).reset_index(drop=True)

    a = pd.get_dummies(frame["theta"], drop_first=True, dtype=float).to_numpy()
    b = pd.get_dummies(frame["dataset"], drop_first=True, dtype=float).to_numpy()
    ab = (a[:, :, None] * b[:, None, :]).reshape(len(frame), -1)
    ones = np.ones((len(frame), 1))

    def rss(*blocks: np.ndarray) -> float:
        design = np.hstack([ones, *blocks])
        _, residual, *_ = np.linalg.lstsq(design, frame["value"].to_numpy(), rcond=None)
        return float(residual[0])

    table = anova(frame, ["theta", "dataset"], typ=2)

    assert table.at["theta", "sum_sq"] == pytest.approx(rss(b) - rss(a, b), rel=1e-9)
    assert table.at["dataset", "sum_sq"] == pytest.approx(rss(a) - rss(a, b), rel=1e-9)
    assert table.at["theta:dataset", "sum_sq"] == pytest.approx(rss(a, b) - rss(a, b, ab), rel=1e-9)
    assert table.at["Residual", "sum_sq"] == pytest.approx(rss(a, b, ab), rel=1e-9)


# pingouin 0.7 calls DataFrame.dropna(inplace=True), which pandas 3.1 deprecates.
@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")
@pytest.mark.parametrize("typ", [2, 3])
@pytest.mark.parametrize(
    ("factors", "dropped"),
    [
        pytest.param(TWO_WAY, [], id="two-way-balanced"),
        pytest.param(TWO_WAY, [1, 4, 9], id="two-way-unbalanced"),
        pytest.param(
            {"theta": [0.0, 45.0], "dataset": ["a", "b", "c"], "method": ["moco", "simclr"]},
            [],
            id="three-way-balanced",
        ),
    ],
)
def test_anova_matches_pingouin(typ: int, factors: dict[str, list], dropped: list[int]) -> None:
    frame = _random_frame(np.random.default_rng(7), 3, factors).drop(index=dropped)

    ours = anova(frame, list(factors), typ=typ)
    theirs = pg.anova(frame, dv="value", between=list(factors), ss_type=typ, effsize="np2")
    theirs.index = [source.replace(" * ", ":") for source in theirs["Source"]]

    assert list(ours.index) == list(theirs.index)
    np.testing.assert_allclose(ours["sum_sq"], theirs["SS"], rtol=1e-6)
    np.testing.assert_allclose(ours["df"], theirs["DF"], rtol=1e-6)
    np.testing.assert_allclose(ours["F"], theirs["F"], rtol=1e-6)
    np.testing.assert_allclose(ours["p"], theirs["p_unc"], rtol=1e-6)
    np.testing.assert_allclose(ours["partial_eta_sq"], theirs["np2"], rtol=1e-6)


def test_anova_with_one_replicate_per_cell_asks_for_more_seeds() -> None:
    frame = _random_frame(np.random.default_rng(0), 1, TWO_WAY)
    with pytest.raises(ValueError, match="add seeds"):
        anova(frame, ["theta", "dataset"])


def test_anova_refuses_a_factor_combination_without_observations() -> None:
    frame = _random_frame(np.random.default_rng(0), 3, TWO_WAY)
    frame = frame[~((frame["theta"] == 45.0) & (frame["dataset"] == "b"))]
    with pytest.raises(ValueError, match=r"theta=45\.0, dataset='b'"):
        anova(frame, ["theta", "dataset"])


# --- anova_table -------------------------------------------------------------------------------


def test_anova_table_finds_a_planted_theta_dataset_interaction() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.08)), ["dice"])
    assert table.set_index("term").at["theta:dataset", "p"] < 1e-4


def test_anova_table_finds_no_interaction_where_none_is_planted() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.0)), ["dice"]).set_index("term")
    assert table.at["theta:dataset", "p"] > 0.05
    assert table.at["theta", "p"] < 1e-4  # the main effects are still there


def test_anova_table_uses_only_factors_with_more_than_one_level() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.0)), ["dice"])
    assert list(table["term"]) == ["theta", "dataset", "theta:dataset", "Residual"]


def test_anova_table_finds_a_planted_strength_dataset_interaction() -> None:
    table = anova_table(_strength_study(interaction=0.1), ["dice"]).set_index("term")
    assert list(table.index) == ["strength", "dataset", "strength:dataset", "Residual"]
    assert table.at["strength:dataset", "p"] < 0.01


def test_anova_table_finds_no_strength_interaction_where_strength_acts_alike_in_every_dataset() -> None:
    table = anova_table(_strength_study(interaction=0.0), ["dice"]).set_index("term")
    assert table.at["strength:dataset", "p"] > 0.01
    assert table.at["strength", "p"] < 1e-4  # the main effect is still there


def test_a_swept_factor_enters_the_full_factorial_after_theta_so_its_interaction_reads_like_thetas() -> None:
    table = anova_table(_strength_study(interaction=0.1, n_theta=2), ["dice"])
    assert list(table["term"]) == [
        "theta", "strength", "dataset",
        "theta:strength", "theta:dataset", "strength:dataset", "theta:strength:dataset",
        "Residual",
    ]  # fmt: skip


def test_a_swept_factor_with_a_single_level_is_left_out_as_any_factor_is() -> None:
    cube = _strength_study(interaction=0.1).isel(strength=[0])
    assert list(anova_table(cube, ["dice"])["term"]) == ["dataset", "Residual"]


def test_anova_table_analyses_every_metric_role_variable_by_default() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.0)))
    assert list(table["metric"].unique()) == ["dice", "final_loss"]
    assert list(table.columns) == [
        "metric",
        "term",
        "sum_sq",
        "df",
        "F",
        "p",
        "partial_eta_sq",
        "balanced",
        "n_per_cell",
    ]


def test_anova_table_reports_a_complete_design_as_balanced_with_its_seed_count() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.0, n_seed=3)), ["dice"])
    assert table["balanced"].all()
    assert set(table["n_per_cell"]) == {"3"}


def test_anova_table_reports_a_missing_seed_as_unbalanced() -> None:
    dice = _rotation_study(interaction=0.0, n_seed=3)
    dice[1, 2, 0] = np.nan  # one seed of one cell was not run
    table = anova_table(_cube(dice), ["dice"])
    assert not table["balanced"].any()
    assert set(table["n_per_cell"]) == {"2-3"}


def test_anova_table_with_one_seed_asks_for_more_seeds() -> None:
    with pytest.raises(AnovaError, match="add seeds"):
        anova_table(_cube(_rotation_study(interaction=0.0, n_seed=1)))


def test_anova_table_skips_an_all_nan_metric_with_a_warning_naming_it() -> None:
    cube = _cube(_rotation_study(interaction=0.0))
    cube["final_loss"][:] = np.nan
    with pytest.warns(UserWarning, match=r"'final_loss' skipped: every cell is NaN"):
        table = anova_table(cube)
    assert list(table["metric"].unique()) == ["dice"]


def test_anova_table_rejects_an_unknown_metric_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match="Did you mean 'dice'"):
        anova_table(_cube(_rotation_study(interaction=0.0)), ["dcie"])


# --- format_anova ------------------------------------------------------------------------------


def test_format_anova_shows_each_metric_with_its_terms_and_design() -> None:
    dice = _rotation_study(interaction=0.08, n_seed=3)
    dice[0, 0, 0] = np.nan
    text = format_anova(anova_table(_cube(dice)))

    heading, *blocks = text.split("\n\n")
    assert heading == "ANOVA (Type II sums of squares, sum contrasts) on per-cell means"
    assert [block.splitlines()[0].split(":")[0] for block in blocks] == ["dice", "final_loss"]
    assert "unbalanced, 2-3 observations per cell" in blocks[0]
    assert "balanced, 3 observations per cell" in blocks[1]
    for block in blocks:
        terms = [line.split()[0] for line in block.splitlines()[2:]]
        assert terms == ["theta", "dataset", "theta:dataset", "Residual"]


def test_format_anova_rounds_f_p_and_partial_eta_squared() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.08)), ["dice"])
    row = table.set_index("term").loc["theta:dataset"]
    line = next(line for line in format_anova(table).splitlines() if "theta:dataset" in line)

    f_text, p_text, eta_text = line.split()[-3:]
    assert re.fullmatch(r"\d+\.\d{2}", f_text)
    assert float(f_text) == pytest.approx(row["F"], abs=0.005)
    assert re.fullmatch(r"\d\.\de-\d+", p_text)
    assert float(p_text) == pytest.approx(row["p"], rel=0.05)
    assert re.fullmatch(r"0\.\d{3}", eta_text)
    assert float(eta_text) == pytest.approx(row["partial_eta_sq"], abs=0.0005)


@pytest.mark.parametrize(("typ", "roman"), [(2, "II"), (3, "III")])
def test_anova_table_carries_its_type_of_sums_of_squares_into_the_text(typ: int, roman: str) -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.08)), typ=typ)
    assert table.attrs[SS_TYPE] == typ
    assert table[table["metric"] == "dice"].attrs[SS_TYPE] == typ  # a selection keeps it
    assert format_anova(table).startswith(f"ANOVA (Type {roman} sums of squares, sum contrasts) on per-cell means\n\n")


def test_format_anova_of_a_table_without_its_type_names_the_contrasts_alone() -> None:
    table = anova_table(_cube(_rotation_study(interaction=0.08)))
    table.attrs.clear()  # as read back from anova.csv
    assert format_anova(table).startswith("ANOVA (sum contrasts) on per-cell means\n\n")
