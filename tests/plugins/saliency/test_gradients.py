"""The gradient methods: SmoothGrad and the vanilla gradient against a plain loop and MONAI; Integrated
Gradients, gradient x input and SmoothGrad against Captum, which defines them for the field."""

from __future__ import annotations

import functools

import pytest
import torch
from captum.attr import InputXGradient, NoiseTunnel
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Saliency as CaptumSaliency
from monai.visualize import VanillaGrad as MonaiVanillaGrad
from torch import Tensor, nn

from tests.conftest import component
from tests.plugins.saliency import toy_network as toy
from tests.plugins.saliency.toy_network import assert_a_stacked_run_gives_the_numbers_of_cells_alone, assert_stacked_equals_alone

N, C, SIZE, SAMPLES, SPREAD = 3, 2, 8, 5, 0.2


saliency_method = functools.partial(component, "saliency_methods")


class RotationObjective(nn.Module):
    """cos(f(x), f(rot90 x)) for a tiny conv net f: the suite's objective in miniature."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(
            nn.Conv2d(C, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2), nn.Tanh(), nn.Flatten()
        ).double()

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        rotated = torch.rot90(x, 1, dims=(2, 3))
        return torch.cosine_similarity(self.encoder(x), self.encoder(rotated), dim=1)


@pytest.fixture
def objective() -> RotationObjective:
    return RotationObjective()


def make_images() -> Tensor:
    return torch.rand(N, C, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture
def images() -> Tensor:
    return make_images()


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gradient(objective: RotationObjective, image: Tensor) -> Tensor:
    """The gradient of the objective at one image [C, H, W], by a single-image backward pass."""
    image = image.clone().requires_grad_(True)
    objective(image.unsqueeze(0), torch.zeros(1, dtype=torch.long)).sum().backward()
    return image.grad


@functools.cache
def loop_smoothgrad_per_channel(postprocess: str, seed: int) -> Tensor:
    """SmoothGrad before the channel reduction, one image and one sample at a time, [N, C, H, W].

    The noise is drawn as the plugin documents: a standard normal draw per image, in order,
    scaled by that image's spread.
    """
    objective, x, draws = RotationObjective(), make_images(), generator(seed)
    means = []
    for i in range(N):
        sigma = SPREAD * (x[i].max() - x[i].min())
        noise = torch.randn((SAMPLES, C, SIZE, SIZE), generator=draws, dtype=x.dtype)
        total = torch.zeros_like(x[i])
        for s in range(SAMPLES):
            noisy = x[i] + sigma * noise[s]
            g = gradient(objective, noisy)
            total += (g if postprocess == "abs" else g * noisy).abs()
        means.append(total / SAMPLES)
    return torch.stack(means)


@pytest.mark.parametrize("postprocess", ["abs", "grad_x_input"])
@pytest.mark.parametrize("channel_reduce", ["max", "mean", "sum"])
def test_smoothgrad_equals_a_loop_over_images_and_samples(
    objective: RotationObjective, images: Tensor, postprocess: str, channel_reduce: str
) -> None:
    method = saliency_method("smoothgrad", samples=SAMPLES, spread=SPREAD, postprocess=postprocess, channel_reduce=channel_reduce)
    per_channel = loop_smoothgrad_per_channel(postprocess, seed=3)
    expected = {"max": per_channel.amax(1), "mean": per_channel.mean(1), "sum": per_channel.sum(1)}[channel_reduce]
    torch.testing.assert_close(method(objective, images, generator(3)), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
def test_smoothgrad_does_not_depend_on_chunk_size(objective: RotationObjective, images: Tensor, chunk_size: int) -> None:
    reference = saliency_method("smoothgrad", samples=SAMPLES, chunk_size=SAMPLES)(objective, images, generator())
    got = saliency_method("smoothgrad", samples=SAMPLES, chunk_size=chunk_size)(objective, images, generator())
    torch.testing.assert_close(got, reference)


@pytest.mark.parametrize("name", ["smoothgrad", "vanilla_grad"])
def test_results_do_not_depend_on_memory_format(objective: RotationObjective, images: Tensor, name: str) -> None:
    reference = saliency_method(name, channels_last=False)(objective, images, generator())
    channels_last_rows = saliency_method(name, channels_last=True)(objective, images, generator())
    channels_last_input = saliency_method(name)(objective, images.to(memory_format=torch.channels_last), generator())
    torch.testing.assert_close(channels_last_rows, reference)
    torch.testing.assert_close(channels_last_input, reference)


class ScoreAsLogit(nn.Module):
    """MONAI's gradient methods explain a class logit: present the objective as logits [B, 1]."""

    def __init__(self, objective: RotationObjective) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, x: Tensor) -> Tensor:
        return self.objective(x, torch.arange(len(x))).unsqueeze(1)


def test_vanilla_grad_equals_monai_vanilla_grad(objective: RotationObjective, images: Tensor) -> None:
    monai = MonaiVanillaGrad(ScoreAsLogit(objective))
    # MONAI takes one image at a time and returns the raw gradient; post-process it the same way.
    expected = torch.cat([monai(image.unsqueeze(0).clone()).abs().amax(dim=1) for image in images])
    got = saliency_method("vanilla_grad")(objective, images, generator())
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("postprocess", ["abs", "grad_x_input"])
def test_smoothgrad_without_noise_equals_vanilla_grad(objective: RotationObjective, images: Tensor, postprocess: str) -> None:
    smooth = saliency_method("smoothgrad", samples=SAMPLES, spread=0.0, postprocess=postprocess)
    vanilla = saliency_method("vanilla_grad", postprocess=postprocess)
    torch.testing.assert_close(smooth(objective, images, generator()), vanilla(objective, images, generator()))


@pytest.mark.parametrize("name", ["smoothgrad", "vanilla_grad"])
def test_maps_are_detached_non_negative_and_one_per_image(objective: RotationObjective, images: Tensor, name: str) -> None:
    maps = saliency_method(name)(objective, images, generator())
    assert maps.shape == (N, SIZE, SIZE)
    assert (maps >= 0).all()
    assert maps.abs().sum() > 0
    assert not maps.requires_grad


def test_smoothgrad_is_reproducible_from_the_generator_seed(objective: RotationObjective, images: Tensor) -> None:
    method = saliency_method("smoothgrad", samples=SAMPLES)
    first, again = method(objective, images, generator(7)), method(objective, images, generator(7))
    other = method(objective, images, generator(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_saliency_works_when_called_under_no_grad(objective: RotationObjective, images: Tensor) -> None:
    method = saliency_method("smoothgrad", samples=SAMPLES)
    expected = method(objective, images, generator())
    with torch.no_grad():
        got = method(objective, images, generator())
    torch.testing.assert_close(got, expected)


def test_an_objective_without_one_score_per_image_is_refused(images: Tensor) -> None:
    with pytest.raises(ValueError, match="one score per image"):
        saliency_method("vanilla_grad")(lambda x, index: x.sum(), images, generator())


# -- against Captum, on a small float64 network


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_integrated_gradients_is_captums(quadrature, baseline):
    f, x = toy.objective(), toy.images()
    b = torch.zeros_like(x) if baseline == "zeros" else x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    want = CaptumIntegratedGradients(f).attribute(
        x, baselines=b, additional_forward_args=(toy.INDEX,), n_steps=20, method=quadrature
    )
    got = toy.method("integrated_gradients", steps=20, method=quadrature, baseline=baseline, chunk_size=7)(f, x, toy.g())
    if quadrature == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n (halved at the ends), summing to (n - 1)/n rather than
        # 1; ours are 1/(n - 1), the trapezoid rule over [0, 1]. The two differ by that factor only.
        want = want * 20 / 19
    torch.testing.assert_close(got, want.abs().amax(dim=1), rtol=1e-7, atol=1e-10)


def test_integrated_gradients_are_complete_before_the_magnitude():
    # Signed attributions sum to f(x) - f(b): what makes IG's map a decomposition of the score.
    f, x = toy.objective(), toy.images()
    attributions = CaptumIntegratedGradients(f).attribute(x, additional_forward_args=(toy.INDEX,), n_steps=512)
    gap = f(x, toy.INDEX) - f(torch.zeros_like(x), toy.INDEX)
    # ReLUs make the integrand piecewise smooth, so the quadrature converges slowly: 1 % at 512 points.
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap, rtol=1e-2, atol=1e-6)


def test_gradient_x_input_is_captums_input_x_gradient():
    f, x = toy.objective(), toy.images()
    want = InputXGradient(f).attribute(x, additional_forward_args=(toy.INDEX,)).abs().sum(dim=1)
    torch.testing.assert_close(toy.method("gradient_x_input", channel_reduce="sum")(f, x, toy.g()), want, rtol=1e-9, atol=1e-12)


def test_smoothgrad_converges_to_captums_noise_tunnel():
    # The noise is drawn differently (our generator, Captum's global RNG), so the two agree in
    # expectation: with many samples both approach the same mean |gradient|.
    f, x = toy.objective(), toy.images()
    torch.manual_seed(0)
    sigma = 0.15 * float(x.max() - x.min())  # one image range for all: Captum takes one stdev per input
    x_same_range = x.clone()
    x_same_range[:, 0, 0, 0], x_same_range[:, 0, 0, 1] = x.min(), x.max()
    want = NoiseTunnel(CaptumSaliency(f)).attribute(
        x_same_range, nt_type="smoothgrad", nt_samples=1000, stdevs=sigma, additional_forward_args=(toy.INDEX,)
    )
    got = toy.method("smoothgrad", samples=1000, spread=0.15)(f, x_same_range, toy.g())
    relative = (got - want.amax(dim=1)).abs().mean() / want.amax(dim=1).mean()
    assert relative < 0.05, float(relative)


@pytest.mark.parametrize("name", ["integrated_gradients", "gradient_x_input"])
def test_stacked_methods_equal_one_model_at_a_time(name):
    assert_stacked_equals_alone(name)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_stacked_integrated_gradients_run_gives_the_numbers_of_cells_alone(tmp_path):
    assert_a_stacked_run_gives_the_numbers_of_cells_alone(tmp_path, "integrated_gradients")
