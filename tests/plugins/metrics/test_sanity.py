"""Sanity and faithfulness metrics: model-parameter randomisation and the deletion curve."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchsuite.api import MetricInputs
from benchsuite_plugins.metrics.sanity import reinitialised, spearman
from tests.conftest import component, metric_inputs

N, SIZE = 6, 16


metric = functools.partial(component, "metrics")


class Method(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh())
        self.head = nn.Linear(8, 4)

    def embed(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x).mean(dim=(2, 3)))


class TurnSimilarity:
    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, rows: Tensor, index: Tensor) -> Tensor:
        turned = torch.rot90(rows, 1, dims=(-2, -1))
        return F.cosine_similarity(self.model.embed(rows), self.model.embed(turned), dim=1)


def gradient_maps(model: nn.Module, x: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(TurnSimilarity(model)(x, torch.arange(len(x))).sum(), x)
    return grad.abs().amax(dim=1)


def edge_maps(model: nn.Module, x: Tensor) -> Tensor:
    """A 'saliency method' that ignores the model: the image's gradient magnitude."""
    dy, dx = torch.gradient(x[:, 0], dim=(1, 2))
    return (dx.square() + dy.square()).sqrt()


def images() -> Tensor:
    return torch.rand(N, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def inputs(saliency: Tensor, x: Tensor, objective, explain) -> MetricInputs:
    masks = torch.ones(len(x), SIZE, SIZE, dtype=torch.bool)
    return metric_inputs(saliency=saliency, masks=masks, images=x, objective=objective, explain=explain)


# -- model-parameter randomisation


def test_spearman_is_scipys_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (5, 40), generator=g).double()  # many ties
    b = a + torch.randn(5, 40, generator=g, dtype=torch.float64)
    want = [scipy.stats.spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(spearman(a, b).numpy(), want, rtol=1e-12)


def test_reinitialised_draws_new_weights_from_the_seed_and_leaves_the_model_alone():
    model = Method()
    before = [p.clone() for p in model.parameters()]
    first, again, other = reinitialised(model, 5), reinitialised(model, 5), reinitialised(model, 6)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters(), strict=True))
    assert not any(torch.equal(p, q) for p, q in zip(first.parameters(), model.parameters(), strict=True))
    assert not torch.equal(next(first.parameters()), next(other.parameters()))
    assert not first.training


def test_randomisation_separates_maps_that_depend_on_the_weights_from_maps_that_do_not():
    # Adebayo et al.'s point: a method whose maps survive re-initialising the model explains the
    # image, not the model. The edge detector does; the gradient does not.
    x, model = images(), Method().eval()
    objective = TurnSimilarity(model)
    gradient = metric("randomisation_correlation")(
        inputs(gradient_maps(model, x), x, objective, lambda other: gradient_maps(other, x))
    )
    edges = metric("randomisation_correlation")(inputs(edge_maps(model, x), x, objective, lambda other: edge_maps(other, x)))
    torch.testing.assert_close(edges, torch.ones(N))
    assert gradient.shape == (N,) and gradient.mean() < 0.6, gradient


def test_randomisation_is_nan_without_maps():
    x, model = images(), Method().eval()
    no_maps = torch.full((N, SIZE, SIZE), float("nan"))
    values = metric("randomisation_correlation")(inputs(no_maps, x, TurnSimilarity(model), lambda other: no_maps))
    assert values.isnan().all()


# -- deletion curve


class MeanInRegion:
    """The mean intensity inside a fixed region: the pixels that matter are known."""

    def __init__(self, region: Tensor) -> None:
        self.region, self.model = region, nn.Identity()

    def __call__(self, rows: Tensor, index: Tensor) -> Tensor:
        return (rows[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()


def region() -> Tensor:
    r = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    r[4:9, 5:12] = True
    return r


@pytest.mark.parametrize("fill", ["zeros", "mean", "blur"])
def test_a_map_on_the_pixels_that_matter_deletes_the_score_first(fill):
    # A bright region on a dark background: deleting its pixels lowers the score under any fill.
    inside = region().float()
    x = 0.2 * images() + 0.7 * inside
    objective = MeanInRegion(inside)
    faithful = inside.expand(N, SIZE, SIZE) + 0.01 * torch.rand(N, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    backwards = 1 - faithful
    deletion = metric("deletion_auc", steps=8, fill=fill)
    good, bad = deletion(inputs(faithful, x, objective, None)), deletion(inputs(backwards, x, objective, None))
    assert (good < bad).all(), (good, bad)


def test_the_curve_runs_from_the_intact_score_to_the_fully_deleted_one_and_normalises_to_one():
    x, objective = images(), MeanInRegion(region().float())
    saliency = torch.rand(N, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    deletion = metric("deletion_auc", steps=4, fill="zeros", batch_size=4)
    curve = deletion.curve(inputs(saliency, x, objective, None))
    assert curve.shape == (N, 5)
    torch.testing.assert_close(curve[:, 0], objective(x, torch.arange(N)).double())
    torch.testing.assert_close(curve[:, -1], torch.zeros(N, dtype=torch.float64))
    normalised = deletion(inputs(saliency, x, objective, None))
    shares = np.linspace(0, 1, 5)
    want = np.trapezoid((curve / curve[:, :1]).numpy(), shares, axis=1)
    np.testing.assert_allclose(normalised.numpy(), want, rtol=1e-6)
    # Any batch size gives the same values.
    torch.testing.assert_close(
        metric("deletion_auc", steps=4, fill="zeros", batch_size=1)(inputs(saliency, x, objective, None)), normalised
    )


def test_normalised_deletion_is_nan_where_the_intact_similarity_is_not_positive():
    # A similarity that starts at or below 0 would turn a rise into a fall once divided by its start.
    x = images()
    x[1], x[3] = -x[1], 0.0
    objective, saliency = MeanInRegion(region().float()), torch.rand(N, SIZE, SIZE)
    normalised = metric("deletion_auc", steps=2)(inputs(saliency, x, objective, None))
    assert normalised[[1, 3]].isnan().all() and normalised[[0, 2, 4, 5]].isfinite().all()
    assert metric("deletion_auc", steps=2, normalise=False)(inputs(saliency, x, objective, None)).isfinite().all()


def test_deletion_is_nan_for_an_undefined_map():
    x, objective = images(), MeanInRegion(region().float())
    saliency = torch.rand(N, SIZE, SIZE)
    saliency[2] = float("nan")
    values = metric("deletion_auc", steps=2)(inputs(saliency, x, objective, None))
    assert values[2].isnan() and values[[0, 1, 3, 4, 5]].isfinite().all()
