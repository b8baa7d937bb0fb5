"""Barlow Twins: the loss against lightly's, the standardised embedding, and learning on the shapes."""

from __future__ import annotations

import copy

import pytest
import torch
from lightly.loss import BarlowTwinsLoss
from torch import nn

from benchsuite.api import SSPMethod, TrainingParams
from benchsuite.engine.registry import ParamsError, default_registry
from benchsuite_plugins.ssp_methods.barlow_twins import barlow_twins_loss
from tests.plugins.ssp_methods.test_byol import images, make_method, pretrain_on_turned_shapes, random_embeddings

SMALL = {"proj_hidden_dim": 64, "proj_dim": 32}


def standardised(z: torch.Tensor) -> torch.Tensor:
    """``z`` standardised per feature over the batch, as the method's ``standardise`` does in training."""
    return nn.BatchNorm1d(z.shape[1], affine=False)(z)


def test_barlow_twins_is_registered_with_training_params_and_the_papers_lambda():
    component = default_registry().get("ssp_methods", "barlow_twins")
    assert issubclass(component.params, TrainingParams)
    assert isinstance(make_method("barlow_twins", **SMALL), SSPMethod)
    defaults = component.params()
    # The projector is 2048 wide, not the paper's 8192: the module docs say why.
    assert (defaults.redundancy_weight, defaults.proj_hidden_dim, defaults.proj_dim) == (0.0051, 2048, 2048)


@pytest.mark.parametrize(("field", "value"), [("redundancy_weight", -0.1), ("proj_dim", 0), ("proj_hidden_dim", 0)])
def test_out_of_range_params_are_refused(field, value):
    with pytest.raises(ParamsError, match=field):
        default_registry().parse_params("ssp_methods", "barlow_twins", {field: value})


@pytest.mark.parametrize(("n", "d", "redundancy_weight"), [(8, 16, 0.0051), (32, 64, 0.0051), (6, 10, 0.5)])
def test_loss_matches_lightlys_barlow_twins_loss(n, d, redundancy_weight):
    z1, z2 = random_embeddings(2, n, d, seed=d)
    # lightly standardises inside its loss with F.batch_norm in training mode (biased variance,
    # eps 1e-5), which is what a BatchNorm1d without affine parameters does; its C is z1^T z2 / N
    # and its loss the paper's sum, without further scaling. Its default lambda is the paper's
    # 5e-3, so lambda is passed.
    expected = BarlowTwinsLoss(lambda_param=redundancy_weight)(z1, z2)
    got = barlow_twins_loss(standardised(z1), standardised(z2), redundancy_weight)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-6)


def test_method_loss_is_lightlys_loss_of_its_projections():
    method = make_method("barlow_twins", **SMALL)
    view1, view2 = images(8, seed=1), images(8, seed=2)
    with torch.no_grad():
        loss = method(view1, view2)
        twin = copy.deepcopy(method)  # its BatchNorm statistics move on each pass, its outputs do not
        z1, z2 = (twin.projector(twin.encoder(v)) for v in (view1, view2))
    torch.testing.assert_close(loss, BarlowTwinsLoss(lambda_param=0.0051)(z1, z2), atol=1e-5, rtol=1e-6)


def test_loss_is_zero_for_identical_decorrelated_views_and_counts_each_off_diagonal_correlation():
    # Rows of a scaled 4 x 4 Hadamard matrix: standardised, uncorrelated features, so C = I.
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    z = hadamard[:, 1:]
    assert barlow_twins_loss(z, z, 0.0051).item() == pytest.approx(0, abs=1e-6)
    # Feature 0 copied into feature 1: C_01 = C_10 = 1, C_11 stays 1, so the loss is lambda * 2.
    copied = torch.cat([z[:, :1], z[:, :1], z[:, 2:]], dim=1)
    assert barlow_twins_loss(copied, copied, 0.25).item() == pytest.approx(0.5, abs=1e-6)


def test_embed_is_standardised_over_the_batch_in_training_and_by_running_statistics_outside_it():
    method = make_method("barlow_twins", **SMALL)
    x = images(16, seed=0)
    z = method.embed(x)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(dim=0, unbiased=False), torch.ones(32), atol=1e-3, rtol=0)
    method.eval()
    # Outside training each image is scored on its own: one image embeds alike alone or in a batch.
    torch.testing.assert_close(method.embed(x[:1]), method.embed(x)[:1])


def test_learns_on_the_symmetric_shapes():
    curves, before, after = pretrain_on_turned_shapes(make_method("barlow_twins", epochs=10, optimizer="adam", lr=3e-3, **SMALL))
    # Observed over initial seeds 0-2: loss 16-20 -> 2.8-3.6, pair ranking 0.52-0.59 -> 0.85-0.90.
    assert curves.epoch_loss[-1] < 0.5 * curves.epoch_loss[0]
    assert after > before + 0.2
