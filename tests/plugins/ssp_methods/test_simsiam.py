"""SimSiam: the loss against lightly's, the stop-gradient, and learning on the shapes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity

from benchsuite.api import SSPMethod, TrainingParams
from benchsuite.engine.registry import ParamsError, default_registry
from benchsuite.engine.stacking import after_step_mode
from benchsuite_plugins.ssp_methods.simsiam import simsiam_loss
from tests.plugins.ssp_methods.test_byol import images, make_method, pretrain_on_turned_shapes, random_embeddings

SMALL = {"proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 16}


def test_simsiam_is_registered_with_training_params_and_the_papers_defaults():
    component = default_registry().get("ssp_methods", "simsiam")
    assert issubclass(component.params, TrainingParams)
    assert isinstance(make_method("simsiam", **SMALL), SSPMethod)
    defaults = component.params()
    assert (defaults.proj_hidden_dim, defaults.proj_dim, defaults.pred_hidden_dim) == (2048, 2048, 512)


@pytest.mark.parametrize(
    ("field", "value"), [("proj_hidden_dim", 0), ("proj_dim", 0), ("pred_hidden_dim", 0), ("queue_size", 16)]
)
def test_out_of_range_or_unknown_params_are_refused(field, value):
    with pytest.raises(ParamsError, match=field):
        default_registry().parse_params("ssp_methods", "simsiam", {field: value})


@pytest.mark.parametrize(("n", "d"), [(8, 16), (5, 256)])
def test_loss_matches_lightlys_negative_cosine_similarity(n, d):
    p1, p2, z1, z2 = random_embeddings(4, n, d, seed=d)
    # lightly's NegativeCosineSimilarity is SimSiam's D(p, z) = -mean(cos), the same sign and scale.
    ncs = NegativeCosineSimilarity()
    expected = ncs(p1, z2) / 2 + ncs(p2, z1) / 2
    torch.testing.assert_close(simsiam_loss(p1, p2, z1, z2), expected, atol=1e-5, rtol=0)


def test_method_loss_is_the_loss_of_its_predictions_and_projections():
    method = make_method("simsiam", **SMALL)
    view1, view2 = images(8, seed=1), images(8, seed=2)
    with torch.no_grad():
        loss = method(view1, view2)
        twin = copy.deepcopy(method)  # its BatchNorm statistics move on each pass, its outputs do not
        z1, z2 = (twin.projector(twin.encoder(v)) for v in (view1, view2))
        p1, p2 = twin.predictor(z1), twin.predictor(z2)
    ncs = NegativeCosineSimilarity()
    torch.testing.assert_close(loss, ncs(p1, z2) / 2 + ncs(p2, z1) / 2, atol=1e-5, rtol=0)


def test_loss_stops_the_gradient_at_the_projections():
    p1, p2, z1, z2 = (t.requires_grad_(True) for t in random_embeddings(4, 6, 8, seed=0))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None


def test_loss_lies_between_minus_one_and_one():
    z1, z2 = random_embeddings(2, 6, 8, seed=1)
    assert simsiam_loss(2 * z2, z1, z1, z2).item() == pytest.approx(-1, abs=1e-6)
    assert simsiam_loss(-z2, -z1, z1, z2).item() == pytest.approx(1, abs=1e-6)


def test_projector_ends_in_batchnorm_so_each_feature_is_standardised_over_the_batch():
    method = make_method("simsiam", **SMALL)
    z = method.projector(method.encoder(images(16, seed=0)))
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(dim=0, unbiased=False), torch.ones(32), atol=1e-3, rtol=0)


def test_has_no_after_step():
    assert after_step_mode([make_method("simsiam", seed=s, **SMALL) for s in (1, 2)]) == "none"


def test_embed_returns_unit_projections():
    method = make_method("simsiam", **SMALL).eval()
    x = images(5, seed=0)
    embedding = method.embed(x)
    assert embedding.shape == (5, 32)
    torch.testing.assert_close(embedding, F.normalize(method.projector(method.encoder(x)), dim=1))


def test_learns_on_the_symmetric_shapes():
    curves, before, after = pretrain_on_turned_shapes(make_method("simsiam", epochs=10, optimizer="adam", lr=3e-3, **SMALL))
    # Observed over initial seeds 0-2: loss -0.01 to 0.01 -> -0.31 to -0.37, pair ranking 0.52-0.59 -> 0.75-0.83.
    assert curves.epoch_loss[-1] < curves.epoch_loss[0] - 0.2
    assert after > before + 0.1
