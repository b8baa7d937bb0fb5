"""The localisation metrics against Quantus, the explainability field's reference implementation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import quantus
import torch

from benchsuite.api import MetricInputs
from tests.conftest import component, metric_inputs

N, SIZE = 8, 10


metric = functools.partial(component, "metrics")


def fixtures(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps without ties (a random permutation of distinct values) and masks of varied size, one empty."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.stack([torch.randperm(SIZE * SIZE, generator=g).double().view(SIZE, SIZE) for _ in range(N)])
    masks = torch.zeros(N, SIZE, SIZE, dtype=torch.bool)
    for i in range(N - 1):
        top, left = torch.randint(0, 5, (2,), generator=g).tolist()
        masks[i, top : top + 2 + i % 4, left : left + 3 + i % 3] = True
    masks[3] = maps[3] >= maps[3].max() - 20  # a mask around the peak: the pointing game's hit
    return maps, masks  # the last mask is empty


def inputs(maps: torch.Tensor, masks: torch.Tensor) -> MetricInputs:
    return metric_inputs(saliency=maps, masks=masks, images=torch.rand(len(maps), 1, SIZE, SIZE))


def quantus_values(measure, maps: torch.Tensor, masks: torch.Tensor, **extra) -> np.ndarray:
    a, s = maps.numpy()[:, None], masks.numpy()[:, None].astype(float)
    return np.asarray(measure.evaluate_batch(a_batch=a, s_batch=s, **extra), dtype=float)


def ours(name: str, maps: torch.Tensor, masks: torch.Tensor, **params) -> np.ndarray:
    return metric(name, **params)(inputs(maps, masks)).numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_pointing_game_is_quantus(seed):
    maps, masks = fixtures(seed)
    want = quantus_values(quantus.PointingGame(disable_warnings=True), maps, masks)
    got = ours("pointing_game", maps, masks)
    # Quantus 0.6 writes NaN for an empty mask into a boolean array, where it becomes True (1):
    # the images with a mask are compared, and ours is NaN for the empty one.
    np.testing.assert_array_equal(got[:-1], want[:-1])
    assert got[3] == 1 and np.isnan(got[-1])


def test_weighted_pointing_game_discounts_a_hit_by_the_masks_share():
    # Quantus 0.6's weighted variant fails on any batch (it assigns [N, 1] into a boolean index),
    # so this is checked against its formula by hand: a hit scores 1 - |M| / P.
    maps, masks = fixtures(0)
    plain = ours("pointing_game", maps, masks)
    share = masks.flatten(1).double().mean(dim=1).numpy()
    np.testing.assert_allclose(ours("pointing_game", maps, masks, weighted=True), plain * (1 - share), rtol=1e-12)


@pytest.mark.parametrize("concept_influence", [False, True])
def test_top_k_intersection_is_quantus(concept_influence):
    maps, masks = fixtures(2)
    k = 15  # fraction 0.15 of 100 pixels
    want = quantus_values(quantus.TopKIntersection(k=k, concept_influence=concept_influence, disable_warnings=True), maps, masks)
    got = ours("top_k_intersection", maps, masks, fraction=k / SIZE**2, concept_influence=concept_influence)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_relevance_rank_accuracy_is_quantus_and_equals_dice_top_k():
    maps, masks = fixtures(3)
    want = quantus_values(quantus.RelevanceRankAccuracy(disable_warnings=True), maps, masks)
    got = ours("relevance_rank_accuracy", maps, masks)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(ours("dice", maps, masks, binarize="topk"), got, rtol=1e-12, equal_nan=True)


def test_mass_in_mask_is_quantus_attribution_localisation():
    maps, masks = fixtures(4)
    measure = quantus.AttributionLocalisation(disable_warnings=True)
    want = quantus_values(measure, maps, masks, x_batch=maps.numpy()[:, None])
    np.testing.assert_allclose(ours("mass_in_mask", maps, masks), want, rtol=1e-9, equal_nan=True)


def test_pointing_game_counts_a_hit_when_any_pixel_of_a_tied_maximum_is_in_the_mask():
    maps = torch.zeros(1, SIZE, SIZE, dtype=torch.float64)
    maps[0, 0, 0] = maps[0, 9, 9] = 1.0
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    masks[0, 8:, 8:] = True
    assert ours("pointing_game", maps, masks)[0] == 1.0
