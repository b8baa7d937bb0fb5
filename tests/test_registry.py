"""Plugin discovery through real entry points, and isolation of broken plugins."""

from __future__ import annotations

import pickle

import pytest

from benchsuite.errors import PluginLoadError, PluginWarning, SuiteError
from benchsuite.kinds import NAMES as KINDS
from benchsuite.registry import load_plugins

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


def test_duplicate_name_is_refused_naming_both_distributions(plugin_path):
    plugin_path("bs-one", {"bs_one": GOOD}, {"one": "bs_one"})
    plugin_path("bs-two", {"bs_two": GOOD}, {"two": "bs_two"})
    with pytest.warns(PluginWarning, match="more than one plugin"):
        registry = load_plugins()
    with pytest.raises(PluginLoadError, match=r"bs-one.*bs-two"):
        registry.get("metrics", "thirdparty_metric")


def test_unknown_name_suggests_close_ones():
    with pytest.raises(SuiteError, match=r"unknown dataset 'symetric_shapes'.*Did you mean 'symmetric_shapes'"):
        load_plugins().get("datasets", "symetric_shapes")


def test_params_are_validated_against_the_plugin_model(plugin_path):
    plugin_path("bs-extra", {"bs_extra": GOOD}, {"extra": "bs_extra"})
    registry = load_plugins()
    assert registry.parse_params("metrics", "thirdparty_metric", {"factor": 3}).factor == 3.0
    with pytest.raises(SuiteError, match=r"'factr'.*Did you mean 'factor'"):
        registry.parse_params("metrics", "thirdparty_metric", {"factr": 3})


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
    with pytest.raises(PluginLoadError, match="misspelt"):
        load_plugins(strict=True)


def test_a_registry_travels_to_other_processes_as_the_names_of_its_entry_points(plugin_path):
    plugin_path("bs-good", {"bs_good": GOOD}, {"good": "bs_good"})
    registry = load_plugins()
    rebuilt = pickle.loads(pickle.dumps(registry))
    assert rebuilt is not registry
    assert rebuilt.entry_points == registry.entry_points and "good" in rebuilt.entry_points
    assert {k: set(v) for k, v in rebuilt.components.items()} == {k: set(v) for k, v in registry.components.items()}
    assert rebuilt.get("metrics", "thirdparty_metric").distribution == "bs-good"
