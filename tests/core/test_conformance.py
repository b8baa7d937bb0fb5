"""Every built-in dataset that needs no files and every built-in metric passes benchsuite.testing."""

from __future__ import annotations

import pytest
import torch

from benchsuite.api import PluginError, check_metric_output
from benchsuite.engine.registry import load_plugins
from benchsuite.testing import check_dataset, check_metric

BUILTIN = load_plugins()
METRICS = sorted(n for n, c in BUILTIN.components["metrics"].items() if c.distribution == "benchsuite")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("symmetric_shapes", {"n_images": 8}),
        ("axis_textures", {"n_images": 8}),
        ("isotropic_texture", {"n_images": 8}),
        ("icbm152", {"slices": [40, 44]}),
    ],
)
def test_builtin_dataset_conforms(name, params):
    assert len(check_dataset(name, params)) > 0


@pytest.mark.parametrize("name", METRICS)
def test_builtin_metric_conforms(name):
    check_metric(name)


@pytest.mark.parametrize("direction", ["yes", 1])
def test_the_metric_contract_takes_only_true_false_or_none_as_a_direction(direction):
    class Metric:
        scope, higher_is_better = "image", direction

    with pytest.raises(PluginError, match=f"higher_is_better {direction!r}, not True, False or None"):
        check_metric_output(Metric(), torch.zeros(3), 3)


def test_the_metric_check_catches_a_metric_that_scores_an_empty_mask(plugin_path):
    plugin_path(
        "bs-lenient",
        {
            "bs_lenient": """
import torch
from benchsuite.api import Params, hookimpl

class Lenient:
    scope = "image"
    def __init__(self, params):
        pass
    def __call__(self, inputs):
        # The Quantus mistake: an empty mask silently becomes a number.
        return (inputs.saliency.nan_to_num() * inputs.masks).flatten(1).sum(1)

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("lenient", Lenient, params=Params)
"""
        },
        {"lenient": "bs_lenient"},
    )
    with pytest.raises(AssertionError, match="empty mask instead of NaN"):
        check_metric("lenient")


def test_the_dataset_check_catches_images_outside_the_unit_range(plugin_path):
    plugin_path(
        "bs-bright",
        {
            "bs_bright": """
import torch
from benchsuite.api import ImageMaskSet, Params, hookimpl

def bright(params, spec):
    return ImageMaskSet(torch.full((2, 1, spec.size, spec.size), 255.0), torch.ones(2, spec.size, spec.size, dtype=torch.bool))

@hookimpl
def benchsuite_register_datasets(registry):
    registry.add("bright", bright, params=Params)
"""
        },
        {"bright": "bs_bright"},
    )
    with pytest.raises(AssertionError, match=r"must be scaled to \[0, 1\]"):
        check_dataset("bright")
