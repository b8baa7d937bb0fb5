"""Suite schema: malformed suites give errors that name the key, the line and the fix."""

from __future__ import annotations

import textwrap

import pytest

from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import ThetaRange, load_suite, parse_suite
from benchsuite.results.errors import SuiteError

VALID = """\
name: demo
data: {size: 16, eval_images: 4}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 16}}
theta: [0, 90]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 1, batch_size: 8}}
encoders: {cnn: small_cnn}
metrics: [dice, final_loss]
"""


def load(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return load_suite(path, default_registry())


def test_valid_suite_resolves_plugins_and_fills_parameter_defaults(tmp_path):
    resolved = load(tmp_path, VALID)
    assert resolved.components["datasets"]["shapes"].params.k == 4
    assert resolved.components["ssp_methods"]["moco"].params.epochs == 1
    assert resolved.single("augmentations").plugin == "rotation"
    assert list(resolved.components["metrics"]) == ["dice", "final_loss"]
    assert resolved.describe().endswith("= 4 cells")


def test_misspelt_top_level_key_names_the_line_and_suggests_the_key(tmp_path):
    with pytest.raises(SuiteError) as err:
        load(tmp_path, VALID.replace("seeds:", "sedes:"))
    message = str(err.value)
    assert "suite.yaml:6: 'sedes' is not a known key. Did you mean 'seeds'" in message
    assert "'seeds' is required but missing" in message


def test_misspelt_nested_key_is_located(tmp_path):
    with pytest.raises(SuiteError, match=r"suite.yaml:2: 'data.eval_imgs' is not a known key. Did you mean 'eval_images'"):
        load(tmp_path, VALID.replace("eval_images", "eval_imgs"))


def test_unknown_plugin_suggests_close_names_with_its_line(tmp_path):
    with pytest.raises(SuiteError, match=r"suite.yaml:9: 'encoders.cnn.plugin': unknown encoder 'smal_cnn'.*'small_cnn'"):
        load(tmp_path, VALID.replace("cnn: small_cnn", "cnn: smal_cnn"))


def test_out_of_range_plugin_parameter_is_refused_with_its_line(tmp_path):
    with pytest.raises(
        SuiteError, match=r"suite.yaml:8: 'methods.moco.params'.*'epochs': Input should be greater than or equal to 1"
    ):
        load(tmp_path, VALID.replace("epochs: 1", "epochs: 0"))


def test_misspelt_plugin_parameter_suggests_the_right_one(tmp_path):
    with pytest.raises(SuiteError, match=r"'epoch'.*Did you mean 'epochs'"):
        load(tmp_path, VALID.replace("epochs: 1", "epoch: 1"))


def test_every_problem_is_reported_at_once(tmp_path):
    text = VALID.replace("cnn: small_cnn", "cnn: smal_cnn").replace("[dice, final_loss]", "[dise]")
    with pytest.raises(SuiteError, match=r"has 2 problems"):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("theta", "problem"),
    [
        # A mapping is checked as a range, so the list member's "not a list" would only mislead.
        ("{start: 0, stop: 90, step: 0}", "'theta.step': Input should be greater than 0. See"),
        ("[0, north]", "'theta.1': Input should be a valid number, unable to parse string as a number. See"),
        ("north", "'theta': Input should be a valid list or a valid dictionary or instance of ThetaRange. See"),
    ],
)
def test_a_value_that_fits_no_form_of_theta_gets_one_problem_named_by_its_key(tmp_path, theta, problem):
    with pytest.raises(SuiteError, match=r"has 1 problem: ") as err:
        load(tmp_path, VALID.replace("theta: [0, 90]", f"theta: {theta}"))
    assert problem in str(err.value)


def test_the_outcome_is_one_of_the_suites_metrics_by_its_name(tmp_path):
    assert load(tmp_path, VALID + "outcome: final_loss\n").suite.outcome == "final_loss"
    assert load(tmp_path, VALID).suite.outcome is None
    named = VALID.replace("[dice, final_loss]", "[dice, {plugin: final_loss, name: loss}]") + "outcome: loss\n"
    assert load(tmp_path, named).suite.outcome == "loss"


def test_an_outcome_that_is_not_a_metric_of_the_suite_is_refused_with_its_line_and_the_metrics(tmp_path):
    with pytest.raises(
        SuiteError,
        match=r"suite.yaml:11: 'outcome': 'final_los' is not one of the suite's metrics. Did you mean 'final_loss'.*"
        r"Its metrics: dice, final_loss.",
    ):
        load(tmp_path, VALID + "outcome: final_los\n")


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    with pytest.raises(SuiteError, match=r"suite.yaml:\d+:\d+: the file is not valid YAML"):
        load(tmp_path, VALID.replace("seeds: [0, 1]", "seeds: [0, 1"))


def test_duplicate_key_is_an_error_not_a_silent_override(tmp_path):
    with pytest.raises(SuiteError, match="duplicate key 'seeds'"):
        load(tmp_path, VALID + "seeds: [3]\n")


def test_angle_outside_the_circle_is_refused(tmp_path):
    with pytest.raises(SuiteError, match=r"suite.yaml:5: 'theta'.*\[0, 360\]"):
        load(tmp_path, VALID.replace("[0, 90]", "[0, 400]"))


def test_missing_suite_file_suggests_a_neighbour(tmp_path):
    (tmp_path / "rotation.yaml").write_text(VALID)
    with pytest.raises(SuiteError, match=r"does not exist.*'rotation\.yaml'"):
        load_suite(tmp_path / "rotaton.yaml", default_registry())


@pytest.mark.parametrize(
    ("text", "found"), [("- just\n- a list\n", "a list"), ("", "an empty file"), ("rotation\n", "a single value")]
)
def test_a_suite_must_be_a_mapping(text, found):
    with pytest.raises(SuiteError, match=f"must be a YAML mapping with keys such as name, datasets, theta, seeds; got {found}"):
        parse_suite(text)


def test_theta_range_excludes_its_stop_like_range():
    assert ThetaRange(start=0, stop=360, step=30).values() == [float(t) for t in range(0, 360, 30)]
    assert len(ThetaRange(start=0, stop=360, step=0.1).values()) == 3600
    assert ThetaRange(start=0, stop=1, step=0.1).values()[3] == 0.3


def test_theta_range_with_stop_before_start_is_refused(tmp_path):
    with pytest.raises(SuiteError, match=r"stop .* must be greater than start"):
        load(tmp_path, VALID.replace("theta: [0, 90]", "theta: {start: 90, stop: 10, step: 5}"))
