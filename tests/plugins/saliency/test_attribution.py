"""The attribution methods against Captum, which defines them for the field, on a small float64 network."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from captum.attr import (
    GuidedBackprop as CaptumGuidedBackprop,
)
from captum.attr import (
    InputXGradient,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
)
from captum.attr import (
    IntegratedGradients as CaptumIntegratedGradients,
)
from captum.attr import (
    Occlusion as CaptumOcclusion,
)
from captum.attr import (
    Saliency as CaptumSaliency,
)
from pydantic import ValidationError
from torch import Tensor, nn

from benchsuite.api import PluginError
from benchsuite.engine.registry import default_registry
from tests.conftest import component

N, C, SIZE = 4, 2, 12


class Encoder(nn.Module):
    """Two convolutions with (not in-place) ReLUs, a named last block, global average pooling."""

    cam_layer = "block"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(C, 6, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.stem(x)).mean(dim=(2, 3))


class Method(nn.Module):
    """The trained method's role: an encoder and an embedding with a ReLU head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = Encoder()
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))

    def embed(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class PairObjective(nn.Module):
    """cos(f(x), f(rot90 x)) with ``model``, as the pipeline's objective; a module, so Captum can hook it."""

    def __init__(self, model: Method) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: Tensor, index: Tensor) -> Tensor:
        turned = torch.rot90(rows, 1, dims=(-2, -1))
        return torch.cosine_similarity(self.model.embed(rows), self.model.embed(turned), dim=1)


class ImageObjective(PairObjective):
    """cos(f(x), t_i), a target per image chosen by ``index``: the layer runs once per call, as Captum's layer methods want."""

    def forward(self, rows: Tensor, index: Tensor) -> Tensor:
        targets = torch.linspace(-1, 1, 4 * N, dtype=rows.dtype).view(N, 4)
        return torch.cosine_similarity(self.model.embed(rows), targets[index], dim=1)


method = functools.partial(component, "saliency_methods")


def images() -> Tensor:
    return torch.rand(N, C, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def objective(kind: type[PairObjective] = PairObjective) -> PairObjective:
    return kind(Method().double()).eval()


INDEX = torch.arange(N)


def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_integrated_gradients_is_captums(quadrature, baseline):
    f, x = objective(), images()
    b = torch.zeros_like(x) if baseline == "zeros" else x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    want = CaptumIntegratedGradients(f).attribute(x, baselines=b, additional_forward_args=(INDEX,), n_steps=20, method=quadrature)
    got = method("integrated_gradients", steps=20, method=quadrature, baseline=baseline, chunk_size=7)(f, x, g())
    if quadrature == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n (halved at the ends), summing to (n - 1)/n rather than
        # 1; ours are 1/(n - 1), the trapezoid rule over [0, 1]. The two differ by that factor only.
        want = want * 20 / 19
    torch.testing.assert_close(got, want.abs().amax(dim=1), rtol=1e-7, atol=1e-10)


def test_integrated_gradients_are_complete_before_the_magnitude():
    # Signed attributions sum to f(x) - f(b): what makes IG's map a decomposition of the score.
    f, x = objective(), images()
    attributions = CaptumIntegratedGradients(f).attribute(x, additional_forward_args=(INDEX,), n_steps=512)
    gap = f(x, INDEX) - f(torch.zeros_like(x), INDEX)
    # ReLUs make the integrand piecewise smooth, so the quadrature converges slowly: 1 % at 512 points.
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap, rtol=1e-2, atol=1e-6)


def test_gradient_x_input_is_captums_input_x_gradient():
    f, x = objective(), images()
    want = InputXGradient(f).attribute(x, additional_forward_args=(INDEX,)).abs().sum(dim=1)
    torch.testing.assert_close(method("gradient_x_input", channel_reduce="sum")(f, x, g()), want, rtol=1e-9, atol=1e-12)


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


def test_occlusion_refuses_strides_that_leave_pixels_unoccluded():
    with pytest.raises(ValidationError, match="stride 4 is larger than window 2"):
        method("occlusion", window=2, stride=4)
    # A window cut to a short image's side can fall below the stride too.
    wide = torch.rand(1, C, 4, 16, dtype=torch.float64)
    with pytest.raises(PluginError, match="shorter side, 4 px, which is less than the stride 6"):
        method("occlusion", window=8, stride=6)(objective(), wide, g())


def test_grad_cam_says_which_layers_exist():
    with pytest.raises(PluginError, match=r"no layer 'layer9'.*stem, block"):
        method("grad_cam", layer="layer9")(objective(), images(), g())


def test_occlusion_is_captums_occlusion_of_the_objective_with_aligned_index():
    f, x = objective(ImageObjective), images()
    want = CaptumOcclusion(f).attribute(
        x, sliding_window_shapes=(C, 3, 3), strides=(C, 2, 2), baselines=0.0, additional_forward_args=(INDEX,)
    )
    got = method("occlusion", window=3, stride=2, perturbations_per_eval=5)(f, x, g())
    # Captum accumulates in float32; ours keeps the input's float64.
    torch.testing.assert_close(got.float(), want.abs().amax(dim=1), rtol=1e-5, atol=1e-7)
    # By hand for one window of image 2: the drop in its own target's similarity.
    occluded = x.clone()
    occluded[:, :, :3, :3] = 0
    drop = f(x, INDEX) - f(occluded, INDEX)
    # Captum accumulates occlusion in float32 whatever the input's dtype.
    torch.testing.assert_close(want[2, :, 0, 0], drop[2].expand(C).float(), rtol=1e-5, atol=1e-7)


def test_smoothgrad_converges_to_captums_noise_tunnel():
    # The noise is drawn differently (our generator, Captum's global RNG), so the two agree in
    # expectation: with many samples both approach the same mean |gradient|.
    f, x = objective(), images()
    torch.manual_seed(0)
    sigma = 0.15 * float(x.max() - x.min())  # one image range for all: Captum takes one stdev per input
    x_same_range = x.clone()
    x_same_range[:, 0, 0, 0], x_same_range[:, 0, 0, 1] = x.min(), x.max()
    want = NoiseTunnel(CaptumSaliency(f)).attribute(
        x_same_range, nt_type="smoothgrad", nt_samples=1000, stdevs=sigma, additional_forward_args=(INDEX,)
    )
    got = method("smoothgrad", samples=1000, spread=0.15)(f, x_same_range, g())
    relative = (got - want.amax(dim=1)).abs().mean() / want.amax(dim=1).mean()
    assert relative < 0.05, float(relative)


@pytest.mark.parametrize("name", ["integrated_gradients", "gradient_x_input", "occlusion"])
def test_stacked_methods_equal_one_model_at_a_time(name):
    # Three models' objectives as one stacked objective: each model's maps as alone.
    fs, x = [PairObjective(Method().double()).eval() for _ in range(3)], images()
    for k, f in enumerate(fs):
        with torch.no_grad():
            for p in f.model.parameters():
                p.mul_(1 + 0.1 * k)

    def stacked(rows: Tensor, index: Tensor) -> Tensor:
        return torch.stack([f(rows[k], index) for k, f in enumerate(fs)])

    saliency = method(name, chunk_size=5) if name != "occlusion" else method(name, perturbations_per_eval=7)
    together = saliency.stacked(stacked, x, [g(), g(), g()])
    for k, f in enumerate(fs):
        torch.testing.assert_close(together[k], saliency(f, x, g()), rtol=1e-9, atol=1e-12)


# -- in a run

SUITE = """\
name: attribution
data: {size: 16, eval_images: 4, examples: 1}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 20}}
theta: [0, 45]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 1, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: SALIENCY
metrics: [pointing_game, top_k_intersection, relevance_rank_accuracy, randomisation_correlation, deletion_auc]
executor: {plugin: local, params: {stack: STACK}}
"""


def run_suite(tmp_path, saliency: str, stack: int):
    from benchsuite.engine.runner import run_cells
    from benchsuite.engine.suite import load_suite
    from benchsuite.results.cube import open_cube

    path = tmp_path / f"{saliency}-{stack}.yaml"
    path.write_text(SUITE.replace("SALIENCY", saliency).replace("STACK", str(stack)))
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path / f"runs-{stack}", progress=False)
    return open_cube(summary.run_dir)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("saliency", ["guided_backprop", "grad_cam", "occlusion"])
def test_every_attribution_method_runs_in_a_suite_with_the_sanity_metrics(tmp_path, saliency):
    cube = run_suite(tmp_path, saliency, 1)
    maps = cube["saliency_example"].sel(example_theta=45.0).values
    assert np.isfinite(maps).all() and (maps >= 0).all() and maps.sum() > 0
    turned = cube.sel(theta=45.0)
    for name in ("pointing_game", "top_k_intersection", "relevance_rank_accuracy", "deletion_auc"):
        assert np.isfinite(turned[name].values).all(), name
    # A rank correlation is undefined for a constant map, which Grad-CAM's ReLU gives a random model at times.
    correlation = turned["randomisation_correlation"].values
    assert np.isfinite(correlation).mean() >= 0.5 and (np.abs(correlation[np.isfinite(correlation)]) <= 1).all()
    for name in ("pointing_game", "top_k_intersection", "relevance_rank_accuracy", "randomisation_correlation", "deletion_auc"):
        assert np.isnan(cube[name].sel(theta=0.0).values).all(), name  # identical views: no maps


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("saliency", ["integrated_gradients", "grad_cam"])
def test_a_stacked_run_gives_the_numbers_of_cells_alone(tmp_path, saliency):
    alone, stacked = run_suite(tmp_path, saliency, 1), run_suite(tmp_path, saliency, 4)
    assert (stacked["stack_size"] == 4).all()
    for name in ("saliency_example", "top_k_intersection", "randomisation_correlation", "deletion_auc"):
        np.testing.assert_allclose(stacked[name].values, alone[name].values, rtol=1e-3, atol=1e-4)
