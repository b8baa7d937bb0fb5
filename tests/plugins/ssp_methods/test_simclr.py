"""SimCLR: NT-Xent over both views with in-batch negatives, checked against a loop-by-loop version."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
import torch.nn.functional as F

from benchsuite.api import SSPMethod, TrainingParams
from benchsuite.engine.registry import default_registry
from benchsuite_plugins.ssp_methods.simclr import SimCLR, SimCLRParams, nt_xent
from tests.plugins.ssp_methods.test_moco import gratings


def make_simclr(seed: int = 0, **params) -> SimCLR:
    """A SimCLR on a tiny small_cnn."""
    torch.manual_seed(seed)
    encoders = default_registry().get("encoders", "small_cnn")
    encoder = encoders.factory(encoders.params(width=8, depth=2), 1, 32)
    return SimCLR(SimCLRParams(**params), encoder)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def nt_xent_by_loops(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent written out anchor by anchor: -log(exp(s_ip / T) / sum_{k != i} exp(s_ik / T))."""
    z = torch.cat([z1, z2]).double()
    n = len(z1)
    losses = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        similarity = [F.cosine_similarity(z[i], z[k], dim=0) / temperature for k in range(2 * n)]
        denominator = sum(similarity[k].exp() for k in range(2 * n) if k != i)
        losses.append(-torch.log(similarity[partner].exp() / denominator))
    return torch.stack(losses).mean()


def test_simclr_is_registered_with_training_params():
    component = default_registry().get("ssp_methods", "simclr")
    assert issubclass(component.params, TrainingParams)
    encoders = default_registry().get("encoders", "small_cnn")
    method = component.factory(component.params(proj_dim=8), encoders.factory(encoders.params(width=8, depth=2), 1, 32))
    assert isinstance(method, SSPMethod)
    assert method.params.temperature == 0.5


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", 0.0), ("temperature", -0.1), ("proj_dim", 0), ("proj_hidden_dim", 0)]
)
def test_out_of_range_params_are_refused(field, value):
    with pytest.raises(pydantic.ValidationError, match=field):
        SimCLRParams(**{field: value})


def test_unknown_params_are_refused():
    with pytest.raises(pydantic.ValidationError, match="queue_size"):
        SimCLRParams(queue_size=16)


def test_loss_of_random_features_is_log_of_2n_minus_1():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 8, 4096, generator=generator)
    # Random high-dimensional features are nearly orthogonal, so every logit is about 0.
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(math.log(2 * 8 - 1), abs=0.05)


def test_initial_loss_of_the_method_is_of_the_order_of_log_2n_minus_1():
    loss = make_simclr()(images(8, seed=1), images(8, seed=2)).item()
    # Logits are cosines / T, so the positive can move the loss by at most 2 / T from chance.
    assert abs(loss - math.log(15)) < 2 / 0.5


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_loss_equals_anchor_by_anchor_nt_xent(temperature):
    generator = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 6, 5, generator=generator)
    torch.testing.assert_close(nt_xent(z1, z2, temperature).double(), nt_xent_by_loops(z1, z2, temperature), atol=1e-5, rtol=0)


def test_method_loss_is_nt_xent_of_its_embeddings():
    method = make_simclr(temperature=0.3)
    view1, view2 = images(4, seed=1), images(4, seed=2)
    with torch.no_grad():
        z1, z2 = method.embed(view1), method.embed(view2)
    torch.testing.assert_close(method(view1, view2).double(), nt_xent_by_loops(z1, z2, 0.3), atol=1e-5, rtol=0)


def test_perfect_pairs_of_orthogonal_embeddings_give_the_closed_form_low_loss():
    n, temperature = 4, 0.5
    z = torch.eye(n, 16)
    # Each anchor: positive cosine 1, 2n - 2 negatives of cosine 0.
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    loss = nt_xent(z, z, temperature).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss < 0.35 * math.log(2 * n - 1)


def test_loss_does_not_depend_on_the_order_of_the_views():
    method = make_simclr()
    view1, view2 = images(4, seed=0), images(4, seed=1)
    torch.testing.assert_close(method(view1, view2), method(view2, view1))


def test_loss_does_not_depend_on_the_embedding_scale():
    generator = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(2, 5, 7, generator=generator)
    torch.testing.assert_close(nt_xent(3 * z1, 0.5 * z2, 0.5), nt_xent(z1, z2, 0.5))


def test_loss_decreases_with_training():
    method = make_simclr()
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        batch = gratings(16, generator)
        loss = method(batch, batch + 0.1 * torch.randn(batch.shape, generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(step / 30)
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.85 * sum(losses[:5])


def test_embed_returns_unit_vectors_of_projection_size():
    embedding = make_simclr(proj_dim=12).embed(images(5, seed=0))
    assert embedding.shape == (5, 12)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(5))
