"""guided_backprop and grad_cam against Captum, which defines them for the field, on a small float64 network."""

from __future__ import annotations

import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor

from benchsuite.api import PluginError
from tests.plugins.saliency.toy_network import (
    INDEX,
    SIZE,
    ImageObjective,
    Method,
    PairObjective,
    assert_a_stacked_run_gives_the_numbers_of_cells_alone,
    assert_runs_with_the_sanity_metrics,
    g,
    images,
    method,
    objective,
)


def test_guided_backprop_is_captums_and_differs_from_the_plain_gradient():
    f, x = objective(), images()
    want = CaptumGuidedBackprop(f).attribute(x, additional_forward_args=(INDEX,)).abs().amax(dim=1)
    got = method("guided_backprop")(f, x, g())
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(got, method("vanilla_grad")(f, x, g()))
    # The ReLUs are plain again afterwards.
    assert all("forward" not in vars(m) for m in f.model.modules())


def test_grad_cam_is_captums_layer_grad_cam_upsampled():
    f, x = objective(ImageObjective), images()
    cam = LayerGradCam(f, f.model.encoder.block).attribute(x, additional_forward_args=(INDEX,), relu_attributions=True)
    want = LayerAttribution.interpolate(cam, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0]
    got = method("grad_cam", batch_size=3)(f, x, g())
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # A layer named explicitly gives that layer's map.
    stem = LayerGradCam(f, f.model.encoder.stem).attribute(x, additional_forward_args=(INDEX,), relu_attributions=True)[:, 0]
    torch.testing.assert_close(method("grad_cam", layer="stem")(f, x, g()), stem, rtol=1e-9, atol=1e-12)


class FirstViewObjective(PairObjective):
    """cos(f(x), c_i) with c_i = f(rot90 x_i) computed beforehand: the pair's similarity as a function of its first view."""

    def __init__(self, model: Method, x: Tensor) -> None:
        super().__init__(model)
        self.targets = model.embed(torch.rot90(x, 1, dims=(-2, -1))).detach()

    def forward(self, rows: Tensor, index: Tensor) -> Tensor:
        return torch.cosine_similarity(self.model.embed(rows), self.targets[index], dim=1)


def test_grad_cam_of_the_pair_weighs_the_first_views_activations():
    # The pair runs the layer twice. dS/dA of the first view's activations holds the second view's
    # embedding fixed, so the map is Captum's Grad-CAM of the similarity to that fixed embedding.
    f, x = objective(), images()
    first_view = FirstViewObjective(f.model, x)
    cam = LayerGradCam(first_view, f.model.encoder.block).attribute(x, additional_forward_args=(INDEX,), relu_attributions=True)
    want = LayerAttribution.interpolate(cam, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(method("grad_cam", batch_size=3)(f, x, g()), want, rtol=1e-9, atol=1e-12)


def test_grad_cam_says_which_layers_exist():
    with pytest.raises(PluginError, match=r"no layer 'layer9'.*stem, block"):
        method("grad_cam", layer="layer9")(objective(), images(), g())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("saliency", ["guided_backprop", "grad_cam"])
def test_runs_in_a_suite_with_the_sanity_metrics(tmp_path, saliency):
    assert_runs_with_the_sanity_metrics(tmp_path, saliency)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_stacked_grad_cam_run_gives_the_numbers_of_cells_alone(tmp_path):
    assert_a_stacked_run_gives_the_numbers_of_cells_alone(tmp_path, "grad_cam")
