"""heldout_infonce: checked against lightly's NTXentLoss and a direct numpy computation on the same embeddings."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.special
import torch
from lightly.loss import NTXentLoss

from benchsuite.api import MetricInputs, PluginError, check_metric_output
from benchsuite.testing import check_metric
from benchsuite_plugins.metrics import heldout
from benchsuite_plugins.metrics.heldout import NEGATIVE_DRAW_SEED, heldout_infonce, negative_views
from tests.conftest import component, metric_inputs

metric = functools.partial(component, "metrics", "heldout_infonce")


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def quarter_turn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, torch.rot90(x, 1, dims=(-2, -1))


def linear_encoder(out_dim: int = 5, seed: int = 1):
    weight = torch.randn(36, out_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda x: x.flatten(1) @ weight


def inputs(x: torch.Tensor, represent=None, augment=quarter_turn) -> MetricInputs:
    # Saliency, masks, training images and losses stay None: a metric that read them would fail here.
    return metric_inputs(images=x, represent=represent or linear_encoder(), augment=augment, train_images=None)


def numpy_infonce(z1: np.ndarray, z2: np.ndarray, temperature: float, negatives_of: list[list[int]]) -> float:
    """The definition, one anchor at a time: view v is z1[v] for v < N, else z2[v - N]; its partner is the positive."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, losses = len(z1), []
    for anchor, negatives in enumerate(negatives_of):
        partner = (anchor + n) % (2 * n)
        logits = np.array([z[anchor] @ z[partner], *(z[anchor] @ z[v] for v in negatives)]) / temperature
        losses.append(scipy.special.logsumexp(logits) - logits[0])
    return float(np.mean(losses))


def every_other_image(n: int) -> list[list[int]]:
    return [[v for v in range(2 * n) if v % n != anchor % n] for anchor in range(2 * n)]


def test_heldout_infonce_passes_the_metric_contract_and_is_better_lower():
    check_metric("heldout_infonce")
    check_metric("heldout_infonce", {"negatives": 3, "temperature": 0.5})
    assert (metric().scope, metric().higher_is_better) == ("cell", False)


@pytest.mark.parametrize(("n", "temperature"), [(2, 0.1), (16, 0.1), (16, 0.5), (40, 0.07)])
def test_with_every_negative_it_is_lightlys_ntxent_loss_of_the_held_out_pairs(n, temperature):
    x, encode = images(n, seed=n), linear_encoder()
    value = metric(temperature=temperature)(inputs(x, encode))
    view1, view2 = quarter_turn(x)
    expected = NTXentLoss(temperature=temperature)(encode(view1), encode(view2))
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    direct = numpy_infonce(encode(view1).numpy(), encode(view2).numpy(), temperature, every_other_image(n))
    assert value.item() == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize(("n", "negatives"), [(5, 1), (16, 7), (16, 30)])
def test_with_a_count_of_negatives_it_is_the_definition_over_the_views_it_drew(n, negatives):
    x, encode = images(n, seed=3), linear_encoder()
    value = metric(negatives=negatives, temperature=0.2)(inputs(x, encode))
    chosen = negative_views(torch.arange(2 * n), n, negatives, torch.Generator().manual_seed(NEGATIVE_DRAW_SEED))
    view1, view2 = quarter_turn(x)
    expected = numpy_infonce(encode(view1).numpy(), encode(view2).numpy(), 0.2, chosen.tolist())
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_the_drawn_negatives_are_distinct_views_of_other_images_the_same_in_every_call_and_uniform():
    n, k = 8, 5
    draw = functools.partial(negative_views, torch.arange(2 * n), n, k)
    chosen = draw(torch.Generator().manual_seed(NEGATIVE_DRAW_SEED))
    assert torch.equal(chosen, draw(torch.Generator().manual_seed(NEGATIVE_DRAW_SEED)))
    for anchor, views in enumerate(chosen.tolist()):
        assert len(set(views)) == k and all(v % n != anchor % n for v in views)
    # Over many draws every view of another image is as likely: 5 of 14 each.
    many = torch.cat([draw(torch.Generator().manual_seed(s))[0] for s in range(2000)])
    share = torch.bincount(many, minlength=2 * n).double() / 2000
    assert share[[0, n]].tolist() == [0.0, 0.0]
    expected = torch.full((2 * n - 2,), k / (2 * n - 2), dtype=torch.float64)
    torch.testing.assert_close(share[share > 0], expected, atol=0.04, rtol=0)


def test_the_value_is_log_one_plus_negatives_when_every_view_maps_to_one_point():
    x = images(16)
    collapsed = metric()(inputs(x, represent=lambda v: torch.ones(len(v), 4, dtype=torch.float64)))
    assert collapsed.item() == pytest.approx(math.log(1 + 30), rel=1e-12)
    assert metric(negatives=9)(inputs(x, represent=lambda v: torch.ones(len(v), 4))).item() == pytest.approx(math.log(10))


def test_orthogonal_images_with_matched_views_give_the_closed_form_and_the_value_rises_as_the_views_drift_apart():
    n, temperature = 8, 0.1
    basis = torch.eye(n, dtype=torch.float64)  # cosine 1 with its partner view, 0 with every other image's views
    exact = heldout_infonce(basis, basis, temperature)
    assert exact.item() == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / temperature)), rel=1e-12)
    noise = torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drifting = [heldout_infonce(basis, basis + scale * noise, temperature).item() for scale in (0.0, 0.2, 0.5, 1.0, 3.0)]
    assert drifting == sorted(drifting) and drifting[0] < 1e-3 < 1.0 < drifting[-1]


def test_it_is_the_same_in_batches_of_any_size_and_uses_no_head_or_training_data():
    x, encode = images(20, seed=5), linear_encoder()
    whole = metric()(inputs(x, encode))
    assert metric(batch_size=3)(inputs(x, encode)).item() == pytest.approx(whole.item(), rel=1e-12)
    check_metric_output(metric(), whole, len(x))


def test_anchors_scored_in_chunks_give_the_value_of_one_chunk(monkeypatch):
    x, encode = images(16, seed=2), linear_encoder()
    whole = metric()(inputs(x, encode))
    monkeypatch.setattr(heldout, "_LOGIT_ELEMENTS", 64)  # 2 anchors of 32 views a chunk
    assert metric()(inputs(x, encode)).item() == pytest.approx(whole.item(), rel=1e-12)


def test_too_many_negatives_for_the_held_out_images_is_an_error_that_says_what_to_change():
    with pytest.raises(PluginError, match=r"asks for 31 negatives.*16 held-out images give 30.*data.eval_images"):
        metric(negatives=31)(inputs(images(16)))


def test_one_held_out_image_has_no_negative_and_gives_nan():
    assert metric()(inputs(images(1))).isnan()
