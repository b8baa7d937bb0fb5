"""The shipped suites recover the answers they planted, on their own training settings.

The default suite's interaction (4-fold shapes are their own 90-degree rotation) runs on a slice
of its grid (two datasets, four angles), so a change to the defaults that makes them too weak to
measure anything fails here; so do the dataset-size control's (a dataset effect in final_loss
that is the dataset's size alone, and none in heldout_infonce) and the other suites' slices.
"""

from __future__ import annotations

import math

import pytest
import yaml

from benchsuite.analysis.anova import anova_table
from benchsuite.engine.registry import default_registry
from benchsuite.engine.runner import NegativesWarning, run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import open_cube, outcome
from tests.conftest import ROOT


def test_default_suite_finds_the_planted_theta_by_dataset_interaction(tmp_path):
    suite = yaml.safe_load((ROOT / "suites" / "rotation.yaml").read_text())
    suite["datasets"] = {k: suite["datasets"][k] for k in ("shapes_k4", "isotropic")}
    suite["theta"] = [0, 45, 90, 135]
    suite["metrics"] = ["heldout_infonce", "final_loss"]
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(suite))
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path, progress=False)
    cube = open_cube(summary.run_dir)
    assert outcome(cube) == "heldout_infonce"

    # The suite's outcome and MoCo's own loss both dip where the shapes' pair is trivial, and
    # the textures' do not: the shapes' held-out views match (1.6 to 2.3) where a turn by 45
    # degrees leaves a representation no better than one point (ln 31 = 3.43), as on the textures.
    table = anova_table(cube).set_index(["metric", "term"])
    for metric, p_value in (("heldout_infonce", 1e-2), ("final_loss", 1e-3)):
        values = cube[metric].sel(dataset="shapes_k4").mean(["seed", "method", "encoder"])
        symmetric, oblique = values.sel(theta=[0.0, 90.0]), values.sel(theta=[45.0, 135.0])
        assert float(symmetric.max()) < float(oblique.min()) - 0.5, (metric, values.values)
        assert table.loc[(metric, "theta:dataset"), "p"] < p_value, metric


def test_a_dataset_effect_that_is_the_datasets_size_shows_in_final_loss_and_not_in_heldout_infonce(tmp_path):
    # The shipped control whole: isotropic textures of 48 and of 216 images from one generator,
    # MoCo v2's recipe for 5 epochs; its comment gives the numbers.
    path = ROOT / "suites" / "dataset-size.yaml"
    with pytest.warns(NegativesWarning, match=r"moco_v2: 18 of 18 cells, 6% to 84% of their negatives"):
        summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path, progress=False)
    cube = open_cube(summary.run_dir)

    # Why: the small dataset ends with most of MoCo's queue still random, easy negatives.
    placeholders = cube["placeholder_negatives"]
    assert (placeholders.sel(dataset="small") == 0.84375).all() and (placeholders.sel(dataset="large") == 0.0625).all()
    loss = cube["final_loss"].mean(["theta", "seed"]).squeeze(drop=True)
    assert float(loss.sel(dataset="large") - loss.sel(dataset="small")) > 0.5, loss.values

    dataset = anova_table(cube).set_index(["metric", "term"]).xs("dataset", level="term")
    assert dataset.loc["final_loss", "F"] > 100 and dataset.loc["final_loss", "p"] < 1e-6, dataset
    assert dataset.loc["heldout_infonce", "p"] > 0.05, dataset
    held_out = cube["heldout_infonce"].mean(["theta", "seed"]).squeeze(drop=True)
    assert abs(float(held_out.sel(dataset="large") - held_out.sel(dataset="small"))) < 0.01, held_out.values


def test_ssl_methods_suite_plants_the_interaction_for_the_methods_it_names(tmp_path):
    # The shipped suite's own training settings, at the two angles that tell a trivial pair of the
    # 4-fold shapes (90 degrees) from a real one (45 degrees), one seed, for the three methods its
    # comment names (the other three do not show it at these settings, as it says).
    suite = yaml.safe_load((ROOT / "suites" / "ssl-methods.yaml").read_text())
    suite["methods"] = {k: suite["methods"][k] for k in ("moco_v2", "barlow_twins", "vicreg")}
    suite["theta"] = [45, 90]
    suite["seeds"] = [0]
    suite["metrics"] = ["heldout_infonce", "final_loss", "embedding_std"]
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(suite))
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path, progress=False)
    cube = open_cube(summary.run_dir).squeeze(["seed", "encoder"], drop=True)
    loss = cube["final_loss"]

    # How much lower the loss is at 90 degrees than at 45, per dataset and method: on the shapes
    # the pair becomes trivial, on the textures it does not.
    dip = loss.sel(theta=45.0) - loss.sel(theta=90.0)
    for method in loss["method"].values:
        # A dict, since sel's own keyword 'method' would take the dimension's name.
        shapes, textures = (float(dip.sel({"dataset": dataset, "method": method})) for dataset in ("shapes_k4", "isotropic"))
        assert shapes > 1.0 and shapes > textures + 1.0, (method, dip.values)

    # As the comment says, MoCo v2's embedding collapses on the shapes where the pair is real (45
    # degrees) and stays spread where it is trivial (90).
    spread = cube["embedding_std"].sel({"dataset": "shapes_k4", "method": "moco_v2"})
    assert float(spread.sel(theta=45.0)) < 0.05 < 0.5 < float(spread.sel(theta=90.0)), spread.values

    # The suite's outcome shows the interaction for MoCo v2 (3.43 to 1.73 on the shapes, none on the
    # textures); Barlow Twins' and VICReg's encoders stay within 0.1 of ln 31 at both angles, as the comment says.
    held_out = cube["heldout_infonce"]
    dip = held_out.sel(theta=45.0) - held_out.sel(theta=90.0)
    shapes, textures = (float(dip.sel({"dataset": dataset, "method": "moco_v2"})) for dataset in ("shapes_k4", "isotropic"))
    assert shapes > 1.0 and abs(textures) < 0.1, dip.values
    others = held_out.sel({"method": ["barlow_twins", "vicreg"]})
    assert float(abs(others - math.log(31)).max()) < 0.1, others.values


def test_augmentation_strength_suite_moves_saliency_onto_the_shapes_not_the_textures(tmp_path):
    # The shipped suite at its two ends, strength 0 and 1, one seed and a third of its epochs: the
    # stars' flat background leaves the star as all the views share, the textures' does not.
    suite = yaml.safe_load((ROOT / "suites" / "augmentation-strength.yaml").read_text())
    suite["sweep"] = {"augmentation.params.strength": [0.0, 1.0]}
    suite["seeds"] = [0]
    suite["methods"]["barlow_twins"]["params"]["epochs"] = 10
    suite["metrics"] = ["mass_in_mask"]
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(suite))
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path, progress=False)
    mass = open_cube(summary.run_dir)["mass_in_mask"].mean("image").squeeze(drop=True)
    rise = mass.sel(strength=1.0) - mass.sel(strength=0.0)
    shapes, textures = float(rise.sel(dataset="shapes_k4")), float(rise.sel(dataset="isotropic"))
    assert shapes > 0.15 and shapes > textures + 0.1, rise.values


def test_embedding_norms_suite_finds_the_normalisation_by_dataset_interaction_and_the_norm_growth(tmp_path):
    """suites/embedding-norms.yaml recovers what its comment plants: the encoder's normalisation decides what a
    small norm flags. A slice of its grid (the shapes and the isotropic textures, group norm and no normalisation,
    1 and 40 epochs, one seed), so a change to the encoder, MoCo v2 or the norm metrics that erases the effect fails here.
    """
    suite = yaml.safe_load((ROOT / "suites" / "embedding-norms.yaml").read_text())
    suite["datasets"] = {k: suite["datasets"][k] for k in ("shapes_k4", "isotropic")}
    suite["seeds"] = [0]
    suite["sweep"] = {"methods.moco_v2.params.epochs": [1, 40], "encoders.small_cnn.params.norm": ["group", "none"]}
    suite["metrics"] = [m for m in suite["metrics"] if isinstance(m, dict) and m.get("name") == "norm_ood_shuffled"]
    suite["metrics"].append("embedding_norm")
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(suite))
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path, progress=False)
    cube = open_cube(summary.run_dir).squeeze(["theta", "seed", "method", "encoder"], drop=True)

    # A small norm flags the shuffled controls of the shapes without normalisation (0.78-0.80 measured
    # at 40 epochs) and the real shapes with group norm (0.00 measured: every control has the larger
    # norm; other settings gave up to 0.33); on the isotropic textures the normalisation moves the
    # AUROC by about 0.1.
    ood = cube["norm_ood_shuffled"].sel(epochs=40)
    shapes_group, shapes_none = (float(ood.sel(dataset="shapes_k4", norm=n)) for n in ("group", "none"))
    assert shapes_group < 0.35 and shapes_none > 0.6, ood.values
    flip = ood.sel(norm="none") - ood.sel(norm="group")
    assert float(flip.sel(dataset="shapes_k4")) > float(flip.sel(dataset="isotropic")) + 0.3, flip.values

    # Pre-training grows the unnormalised representation's norm some 500-fold (0.14-0.17 -> 58-89
    # measured) and the group-normalised one by 1.05-1.3x (4.5-5.5 -> 5.5-6.1).
    norm = cube["embedding_norm"].mean("image")
    growth = norm.sel(epochs=40) / norm.sel(epochs=1)
    assert float(growth.sel(norm="none").min()) > 20, growth.values
    assert float(growth.sel(norm="group").max()) < 2, growth.values
