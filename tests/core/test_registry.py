"""Plugin discovery through real entry points, and isolation of broken plugins."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings

import pytest

from benchsuite.engine.kinds import NAMES as KINDS
from benchsuite.engine.registry import load_plugins
from benchsuite.engine.suite import load_suite
from benchsuite.results.errors import PluginLoadError, PluginWarning, SuiteError
from tests.conftest import write_distribution
from tests.core.test_suite import VALID

GOOD = """
from benchsuite.api import Params, hookimpl

class Scale(Params):
    factor: float = 1.0

def make(params):
    return params.factor

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("thirdparty_metric", make, params=Scale, description="a metric from elsewhere")
"""

BROKEN_IMPORT = "raise ImportError('no module named missing_dependency')\n"

BROKEN_HOOK = """
from benchsuite.api import hookimpl

@hookimpl
def benchsuite_register_datasets(registry):
    raise RuntimeError("registration exploded")
"""


def test_builtin_plugins_are_found_through_entry_points_of_the_benchsuite_distribution():
    registry = load_plugins()
    expected = {
        "datasets": {"symmetric_shapes", "axis_textures", "isotropic_texture", "icbm152"},
        "augmentations": {"rotation"},
        "ssp_methods": {"moco_v2"},
        "encoders": {"small_cnn", "resnet18", "resnet50"},
        "saliency_methods": {"smoothgrad", "vanilla_grad"},
        "metrics": {"dice", "auroc", "mass_in_mask", "final_loss"},
        "executors": {"local"},
    }
    for kind, names in expected.items():
        assert names <= set(registry.components[kind]), kind
        for name in names:
            assert registry.components[kind][name].distribution == "benchsuite"
    assert registry.broken == []


def test_every_hook_kind_has_a_builtin_implementation():
    registry = load_plugins()
    assert all(registry.components[kind] for kind in KINDS)


def test_third_party_distribution_registers_with_its_name_and_version(plugin_path):
    plugin_path("bs-extra", {"bs_extra": GOOD}, {"extra": "bs_extra"}, version="2.3")
    component = load_plugins().get("metrics", "thirdparty_metric")
    assert (component.distribution, component.version, component.plugin) == ("bs-extra", "2.3", "extra")
    assert component.factory(component.params(factor=2.0)) == 2.0


def test_broken_plugin_warns_with_its_name_and_leaves_the_others_usable(plugin_path):
    plugin_path("bs-broken", {"bs_broken": BROKEN_IMPORT}, {"broken": "bs_broken"}, version="0.9")
    with pytest.warns(PluginWarning, match=r"plugin 'broken' from bs-broken 0.9 failed to load: ImportError"):
        registry = load_plugins()
    assert registry.get("datasets", "symmetric_shapes").name == "symmetric_shapes"
    with pytest.raises(SuiteError, match="failed to load"):
        registry.get("datasets", "the_broken_dataset")


def test_a_suite_naming_several_missing_plugins_says_once_which_failed_to_load(plugin_path, tmp_path):
    plugin_path("bs-broken", {"bs_broken": BROKEN_IMPORT}, {"broken": "bs_broken"}, version="0.9")
    with pytest.warns(PluginWarning):
        registry = load_plugins()
    path = tmp_path / "suite.yaml"
    path.write_text(VALID.replace("metrics: [dice, final_loss]", "metrics: [dice, top_mass, pointing]"))
    with pytest.raises(SuiteError) as err:
        load_suite(path, registry)
    message = str(err.value)
    assert "has 2 problems" in message and "unknown metric 'top_mass'" in message and "unknown metric 'pointing'" in message
    assert message.count("It may belong to a plugin that failed to load") == 1 and message.endswith(
        "failed to load: ImportError: no module named missing_dependency."
    )


def test_plugin_whose_registration_hook_raises_is_isolated(plugin_path):
    plugin_path("bs-hook", {"bs_hook": BROKEN_HOOK}, {"hook": "bs_hook"})
    with pytest.warns(PluginWarning, match="registration exploded"):
        registry = load_plugins()
    assert [b.plugin for b in registry.broken] == ["hook"]
    assert "moco_v2" in registry.components["ssp_methods"]


def test_strict_turns_a_broken_plugin_into_an_error(plugin_path):
    plugin_path("bs-broken", {"bs_broken": BROKEN_IMPORT}, {"broken": "bs_broken"})
    with pytest.raises(PluginLoadError, match="--strict"):
        load_plugins(strict=True)


ANOTHER_DICE = """
from benchsuite.api import Params, hookimpl

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("dice", lambda params: None, params=Params, description="a dice of my own")
"""


def load_without_plugin_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        return load_plugins()


def test_a_built_in_name_another_distribution_registers_stays_benchsuites_and_the_other_is_qualified(plugin_path):
    plugin_path("my-metrics", {"my_metrics": ANOTHER_DICE}, {"mine": "my_metrics"})
    registry = load_without_plugin_warnings()
    assert registry.get("metrics", "dice") is registry.get("metrics", "benchsuite:dice")
    assert registry.get("metrics", "dice").distribution == "benchsuite"
    assert registry.get("metrics", "my-metrics:dice").description == "a dice of my own"
    # Distribution names compare as PEP 503 normalises them.
    assert registry.get("metrics", "My_Metrics:dice").distribution == "my-metrics"
    metrics = registry.components["metrics"]
    assert metrics["dice"].distribution == "benchsuite" and metrics["my-metrics:dice"].distribution == "my-metrics"
    assert "benchsuite:dice" not in metrics
    assert registry.shadowed(metrics["my-metrics:dice"]) and not registry.shadowed(metrics["dice"])


def test_installing_a_plugin_that_reuses_a_built_in_name_keeps_a_working_suite_working(plugin_path, tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(VALID))
    before = load_suite(path, load_plugins()).components["metrics"]["dice"]
    plugin_path("my-metrics", {"my_metrics": ANOTHER_DICE}, {"mine": "my_metrics"})
    registry = load_without_plugin_warnings()
    assert load_suite(path, registry).components["metrics"]["dice"] == before
    path.write_text(textwrap.dedent(VALID).replace("[dice, final_loss]", "[{plugin: my-metrics:dice, name: dice}, final_loss]"))
    mine = load_suite(path, registry).components["metrics"]["dice"]
    # The cell carries the name as the suite wrote it; a worker resolves it through the same registry.get.
    assert (mine.plugin, mine.distribution) == ("my-metrics:dice", "my-metrics")


OTHER_METRIC = GOOD.replace("a metric from elsewhere", "another metric from elsewhere")


def test_a_name_two_third_party_distributions_share_must_be_qualified(plugin_path, tmp_path):
    plugin_path("bs-one", {"bs_one": GOOD}, {"one": "bs_one"})
    plugin_path("bs-two", {"bs_two": OTHER_METRIC}, {"two": "bs_two"})
    registry = load_without_plugin_warnings()
    assert {"bs-one:thirdparty_metric", "bs-two:thirdparty_metric"} <= set(registry.components["metrics"])
    assert "thirdparty_metric" not in registry.components["metrics"]
    assert not registry.shadowed(registry.get("metrics", "bs-one:thirdparty_metric"))
    with pytest.raises(SuiteError) as err:
        registry.get("metrics", "thirdparty_metric")
    assert str(err.value) == (
        "metric 'thirdparty_metric' is provided by more than one distribution, bs-one 1.0 and bs-two 1.0; "
        "name one in the suite as 'bs-one:thirdparty_metric' or 'bs-two:thirdparty_metric'."
    )
    assert err.value.exit_code == 2
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(VALID).replace("[dice, final_loss]", "[thirdparty_metric, final_loss]"))
    with pytest.raises(SuiteError, match=r"suite.yaml:10: 'metrics.0.plugin': metric 'thirdparty_metric' is provided by more"):
        load_suite(path, registry)


def test_a_name_one_distribution_registers_twice_stays_unusable(plugin_path):
    plugin_path("bs-twice", {"bs_twice_a": GOOD, "bs_twice_b": GOOD}, {"a": "bs_twice_a", "b": "bs_twice_b"})
    with pytest.warns(PluginWarning, match="'thirdparty_metric' is registered more than once by bs-twice"):
        registry = load_plugins()
    assert not any(name.endswith("thirdparty_metric") for name in registry.components["metrics"])
    for name in ("thirdparty_metric", "bs-twice:thirdparty_metric"):
        with pytest.raises(PluginLoadError, match=r"plugin 'a' from bs-twice 1.0, plugin 'b' from bs-twice 1.0"):
            registry.get("metrics", name)


COLON_NAME = """
from benchsuite.api import hookimpl

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("my:metric", lambda params: None)
"""


def test_a_component_name_with_a_colon_is_refused(plugin_path):
    plugin_path("bs-colon", {"bs_colon": COLON_NAME}, {"colon": "bs_colon"})
    with pytest.warns(PluginWarning, match="reserves for 'distribution:name'"):
        load_plugins()


def test_unknown_name_suggests_close_ones_spelt_as_the_user_spelt_theirs():
    with pytest.raises(SuiteError, match=r"unknown dataset 'symetric_shapes'. Did you mean 'symmetric_shapes'\? Installed"):
        load_plugins().get("datasets", "symetric_shapes")
    with pytest.raises(SuiteError, match=r"Did you mean 'benchsuite:symmetric_shapes'"):
        load_plugins().get("datasets", "benchsuite:symetric_shapes")


def test_params_are_validated_against_the_plugin_model(plugin_path):
    plugin_path("bs-extra", {"bs_extra": GOOD}, {"extra": "bs_extra"})
    registry = load_plugins()
    assert registry.parse_params("metrics", "thirdparty_metric", {"factor": 3}).factor == 3.0
    with pytest.raises(SuiteError, match=r"'factr'.*Did you mean 'factor'"):
        registry.parse_params("metrics", "thirdparty_metric", {"factr": 3})


def test_a_value_that_fits_no_member_of_a_union_reads_as_one_sentence():
    with pytest.raises(SuiteError) as err:
        load_plugins().parse_params("executors", "local", {"workers": -2})
    assert "'workers': Input should be greater than or equal to 1 or 'auto'. Allowed params:" in str(err.value)


def test_a_params_error_is_finished_sentences(plugin_path):
    plugin_path("bs-extra", {"bs_extra": GOOD}, {"extra": "bs_extra"})
    with pytest.raises(SuiteError) as err:
        load_plugins().parse_params("metrics", "thirdparty_metric", {"factor": "big", "factr": 3})
    assert str(err.value) == (
        "bad params for metric 'thirdparty_metric': 'factor': Input should be a valid number, unable to parse string as a "
        "number. 'factr': Extra inputs are not permitted. Did you mean 'factor'? Allowed params: factor."
    )


MISSPELT_HOOK = """
from benchsuite.api import Params, hookimpl

@hookimpl
def benchsuite_register_dataset(registry):  # one letter short of benchsuite_register_datasets
    registry.add("never_seen", lambda params, spec: None, params=Params)
"""


def test_a_misspelt_hook_is_an_error_naming_the_plugin_and_the_right_hook(plugin_path):
    plugin_path("bs-misspelt", {"bs_misspelt": MISSPELT_HOOK}, {"misspelt": "bs_misspelt"})
    with pytest.warns(PluginWarning, match=r"plugin 'misspelt'.*'benchsuite_register_dataset' matches no hook"):
        registry = load_plugins()
    assert "did you mean 'benchsuite_register_datasets'" in registry.broken[0].error.lower()
    with pytest.raises(SuiteError) as err:
        registry.get("datasets", "never_seen")
    # The plugin's error ends in "?", which must not be followed by a second full stop.
    assert "Did you mean 'benchsuite_register_datasets'" in str(err.value) and str(err.value).endswith("?")
    with pytest.raises(PluginLoadError, match="misspelt"):
        load_plugins(strict=True)


def test_a_registry_travels_to_other_processes_as_the_names_of_its_entry_points(plugin_path):
    plugin_path("bs-good", {"bs_good": GOOD}, {"good": "bs_good"})
    plugin_path("bs-other", {"bs_other": GOOD}, {"other": "bs_other"})
    registry = load_plugins()
    rebuilt = pickle.loads(pickle.dumps(registry))
    assert rebuilt is not registry
    assert rebuilt.entry_points == registry.entry_points and "bs-good:good" in rebuilt.entry_points
    assert {k: set(v) for k, v in rebuilt.components.items()} == {k: set(v) for k, v in registry.components.items()}
    assert rebuilt.get("metrics", "bs-good:thirdparty_metric").distribution == "bs-good"
    assert rebuilt.get("metrics", "bs-other:thirdparty_metric").distribution == "bs-other"


def test_an_entry_point_named_like_a_built_in_one_loads_beside_it(plugin_path):
    # A third-party distribution whose entry point is called "metrics", as benchsuite's own is.
    plugin_path("bs-mine", {"bs_mine": GOOD}, {"metrics": "bs_mine"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = load_plugins()
    assert registry.get("metrics", "thirdparty_metric").distribution == "bs-mine"
    assert registry.get("metrics", "dice").distribution == "benchsuite"
    rebuilt = pickle.loads(pickle.dumps(registry))
    assert rebuilt.get("metrics", "thirdparty_metric").distribution == "bs-mine"
    assert rebuilt.get("metrics", "dice").distribution == "benchsuite"


def test_plugins_marks_a_shadowed_component_and_lines_up_its_qualified_name(tmp_path):
    # A real installed distribution, seen by a fresh `benchsuite plugins` process.
    site = write_distribution(tmp_path / "site", "bs-a-rather-long-distribution", "1.0", {"bs_long_dice": ANOTHER_DICE},
                              {"dice": "bs_long_dice"})  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "benchsuite", "plugins", "--kind", "metrics"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    mine = next(line for line in rows if line.strip().startswith("bs-a-rather-long-distribution:dice"))
    assert "(shadowed: 'dice' names benchsuite's own) a dice of my own" in mine
    assert any(line.split()[:2] == ["dice", "benchsuite"] for line in rows)
    starts = set()
    for line in rows:
        name, source, description = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        starts.add((line.index(source, 2 + len(name)), line.rindex(description)))
    assert len(starts) == 1, starts  # sources and descriptions start in one column, past the longest (qualified) name
