"""BYOL: the loss against lightly's, the moving-average target, learning on the shapes, and the tiny suite.

This module also holds what the tests of the four non-contrastive methods (BYOL, SimSiam,
Barlow Twins, VICReg) share: building a method through the registry, pre-training it with the
core's loop on randomly turned symmetric shapes, and the measure of how well its embeddings tell
the shapes apart.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor

from benchsuite.api import DataSpec, SSPMethod, TrainingParams
from benchsuite.engine.registry import ParamsError, default_registry
from benchsuite.engine.stacking import after_step_mode
from benchsuite.engine.training import pretrain
from benchsuite.results.cell_result import TrainingCurves
from benchsuite.results.cube import open_cube
from benchsuite_plugins.augmentations.rotation import Rotation, RotationParams
from benchsuite_plugins.ssp_methods.byol import byol_loss
from tests.core.test_runner import run, with_method

ROTATION = Rotation(RotationParams())
SMALL = {"proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 64}


def make_method(name: str, seed: int = 0, **params) -> SSPMethod:
    """The SSP method ``name`` on a tiny small_cnn, both built through the registry."""
    registry = default_registry()
    torch.manual_seed(seed)
    encoders = registry.get("encoders", "small_cnn")
    encoder = encoders.factory(encoders.params(width=8, depth=2), 1, 32)
    method = registry.get("ssp_methods", name)
    return method.factory(method.params.model_validate(params), encoder)


def images(n: int, seed: int) -> Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def random_embeddings(*shape: int, seed: int) -> list[Tensor]:
    """Independent normal tensors of ``shape``, shifted and scaled as a projector's outputs are."""
    generator = torch.Generator().manual_seed(seed)
    return [t.clone() for t in 0.5 + 2 * torch.randn(shape, generator=generator)]


class RandomTurns:
    """A pair augmentation for these tests: two independent random turns of each image.

    With the study's fixed pair ``(x, R_theta x)`` a predictor can learn the turn itself (see
    the BYOL and SimSiam module docs), so how well a method learns is tested, as these methods
    were published, on views drawn independently of each other. ``theta`` is ignored.
    """

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def _turn(self, x: Tensor) -> Tensor:
        angles = (360 * torch.rand(len(x), generator=self.generator)).tolist()
        return ROTATION.stacked(x[:, None], angles)[1][:, 0]

    def __call__(self, x: Tensor, theta: float) -> tuple[Tensor, Tensor]:
        return self._turn(x), self._turn(x)


def shapes(n: int = 256) -> tuple[Tensor, Tensor]:
    """Training and held-out images (3:1) of the 4-fold symmetric stars at 16 px."""
    found = default_registry().get("datasets", "symmetric_shapes")
    stars = found.factory(found.params(n_images=n), DataSpec(size=16)).images
    return stars[: n * 3 // 4], stars[n * 3 // 4 :]


def pair_ranking(method: SSPMethod, x: Tensor) -> float:
    """How often an image's other view is nearer (cosine of ``embed``) than another image's view.

    Over held-out images, each turned twice: the fraction of (image, other image) comparisons in
    which the image's second view is more similar to its first than the other image's second
    view is. 0.5 is chance; an embedding that tells every image from the others scores 1.
    """
    first, second = RandomTurns(seed=99)(x, 0.0)
    method.eval()
    with torch.no_grad():
        similarity = F.normalize(method.embed(first), dim=1) @ F.normalize(method.embed(second), dim=1).T
    method.train()
    n = len(x)
    beaten = (similarity.diagonal()[:, None] > similarity).sum().item()
    return beaten / (n * (n - 1))


def pretrain_on_turned_shapes(method: SSPMethod) -> tuple[TrainingCurves, float, float]:
    """Pre-train with the core's loop on randomly turned stars; the curves and ``pair_ranking`` before and after."""
    train, held_out = shapes()
    before = pair_ranking(method, held_out)
    curves = pretrain(method, RandomTurns(seed=0), 0.0, train, torch.Generator().manual_seed(0))
    return curves, before, pair_ranking(method, held_out)


def test_byol_is_registered_with_training_params_and_the_papers_defaults():
    component = default_registry().get("ssp_methods", "byol")
    assert issubclass(component.params, TrainingParams)
    method = make_method("byol", **SMALL)
    assert isinstance(method, SSPMethod)
    defaults = component.params()
    got = (defaults.tau_base, defaults.tau_schedule, defaults.proj_hidden_dim, defaults.proj_dim, defaults.pred_hidden_dim)
    assert got == (0.996, "cosine", 4096, 256, 4096)


@pytest.mark.parametrize(
    ("field", "value"),
    [("tau_base", -0.1), ("tau_base", 1.5), ("tau_schedule", "linear"), ("proj_dim", 0), ("pred_hidden_dim", 0)],
)
def test_out_of_range_params_are_refused(field, value):
    with pytest.raises(ParamsError, match=field):
        default_registry().parse_params("ssp_methods", "byol", {field: value})


@pytest.mark.parametrize(("n", "d"), [(8, 16), (5, 256)])
def test_loss_matches_lightlys_negative_cosine_similarity(n, d):
    p1, p2, z1, z2 = random_embeddings(4, n, d, seed=d)
    # lightly's NegativeCosineSimilarity is -mean(cos), and BYOL's loss per direction is
    # 2 - 2 cos: summed over the two directions, 4 + 2 (ncs(p1, z2) + ncs(p2, z1)).
    ncs = NegativeCosineSimilarity()
    expected = 4 + 2 * (ncs(p1, z2) + ncs(p2, z1))
    torch.testing.assert_close(byol_loss(p1, p2, z1, z2), expected, atol=1e-5, rtol=0)


def test_method_loss_is_the_loss_of_its_predictions_and_target_projections():
    method = make_method("byol", **SMALL)
    view1, view2 = images(8, seed=1), images(8, seed=2)
    with torch.no_grad():
        loss = method(view1, view2)
        predict = copy.deepcopy(method)  # its BatchNorm statistics move on each pass, its outputs do not
        p1, p2 = (predict.predictor(predict.projector(predict.encoder(v))) for v in (view1, view2))
        z1, z2 = (predict.target_projector(predict.target_encoder(v)) for v in (view1, view2))
    ncs = NegativeCosineSimilarity()
    torch.testing.assert_close(loss, 4 + 2 * (ncs(p1, z2) + ncs(p2, z1)), atol=1e-5, rtol=0)


def test_loss_stops_the_gradient_at_the_target_projections():
    p1, p2, z1, z2 = (t.requires_grad_(True) for t in random_embeddings(4, 6, 8, seed=0))
    byol_loss(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None


def test_loss_is_zero_when_predictions_point_at_the_targets_and_eight_when_opposite():
    z1, z2 = random_embeddings(2, 6, 8, seed=1)
    assert byol_loss(3 * z2, 0.5 * z1, z1, z2).item() == pytest.approx(0, abs=1e-6)
    assert byol_loss(-z2, -z1, z1, z2).item() == pytest.approx(8, abs=1e-5)


def test_target_network_gets_no_gradient_and_moves_only_by_the_moving_average():
    method = make_method("byol", tau_base=0.9, tau_schedule="constant", **SMALL)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    target = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    before = [p.detach().clone() for p in target]

    method(images(8, seed=0), images(8, seed=1)).backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in target)
    assert all(torch.equal(p, b) for p, b in zip(target, before, strict=True))

    method.after_step(0.7)
    online = [*method.encoder.parameters(), *method.projector.parameters()]
    for t, b, o in zip(target, before, online, strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert any(not torch.equal(p, b) for p, b in zip(target, before, strict=True))


def test_tau_rises_from_tau_base_to_one_by_lightlys_cosine_schedule():
    # The paper's tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 at step k of K is lightly's
    # cosine_schedule over K + 1 steps (lightly reaches its end value one step early).
    method = make_method("byol", tau_base=0.99, **SMALL)
    total = 50
    taus = [method.tau(step / total) for step in range(total)]
    assert taus == pytest.approx([cosine_schedule(step, total + 1, 0.99, 1.0) for step in range(total)], abs=1e-12)
    assert taus[0] == 0.99
    assert all(a < b for a, b in itertools.pairwise(taus))
    assert method.tau(0.5) == pytest.approx(0.995)
    assert make_method("byol", tau_base=0.99, tau_schedule="constant", **SMALL).tau(0.5) == 0.99


def test_after_step_moves_the_target_by_the_scheduled_tau():
    method = make_method("byol", tau_base=0.9, **SMALL)
    online = [*method.encoder.parameters(), *method.projector.parameters()]
    target = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    with torch.no_grad():
        for p in online:
            p.add_(1.0)
    before = [p.detach().clone() for p in target]
    method.after_step(0.5)  # tau = 0.95
    for t, b, o in zip(target, before, online, strict=True):
        torch.testing.assert_close(t, 0.95 * b + 0.05 * o)


@pytest.mark.parametrize(("tau", "follows"), [(1.0, False), (0.0, True)])
def test_target_starts_as_a_copy_and_tau_one_freezes_it_while_tau_zero_copies_the_online_network(tau, follows):
    method = make_method("byol", tau_base=tau, **SMALL)
    online = [*method.encoder.parameters(), *method.projector.parameters()]
    target = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    assert all(torch.equal(t, o) for t, o in zip(target, online, strict=True))
    with torch.no_grad():
        for p in online:
            p.add_(1.0)
    method.after_step(0.0)
    assert all(torch.equal(t, o) == follows for t, o in zip(target, online, strict=True))


def test_after_step_runs_once_on_the_stacked_tensors():
    # The moving average is elementwise, so a stack updates all its targets in one call, as MoCo's does.
    assert after_step_mode([make_method("byol", seed=s, **SMALL) for s in (1, 2)]) == "stacked"


def test_embed_returns_unit_online_projections():
    method = make_method("byol", **SMALL)
    embedding = method.embed(images(5, seed=0))
    assert embedding.shape == (5, 32)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        torch.testing.assert_close(embedding, F.normalize(method.projector(method.encoder(images(5, seed=0))), dim=1))


def test_learns_on_the_symmetric_shapes():
    curves, before, after = pretrain_on_turned_shapes(make_method("byol", epochs=20, optimizer="adam", lr=3e-3, **SMALL))
    # Observed over initial seeds 0-2: loss 3.3-3.4 -> 1.1-1.5, pair ranking 0.54-0.56 -> 0.68-0.76.
    assert curves.epoch_loss[-1] < 0.7 * curves.epoch_loss[0]
    assert after > before + 0.1


@pytest.mark.parametrize("name", ["byol", "simsiam", "barlow_twins", "vicreg"])
def test_runs_end_to_end_in_the_tiny_suite_with_its_defaults(tmp_path, name):
    cube = open_cube(run(tmp_path, with_method(name)).run_dir)
    assert f"plugin: {name}" in cube.attrs["suite_yaml"]
    assert np.isfinite(cube["final_loss"].values).all()
    assert np.isfinite(cube["dice"].sel(theta=90.0).values).all()
