"""The saliency-vs-mask metrics, checked against MONAI, scikit-learn, scikit-image, Quantus (the
explainability field's reference implementation) and hand-worked cases."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import quantus
import torch
from monai.metrics import compute_dice
from sklearn.metrics import roc_auc_score

from benchsuite.api import Metric, MetricInputs
from benchsuite_plugins.metrics.localisation import otsu_threshold
from tests.conftest import component, metric_inputs

metric = functools.partial(component, "metrics")


def inputs(saliency: torch.Tensor, masks: torch.Tensor) -> MetricInputs:
    n, h, w = saliency.shape
    return metric_inputs(saliency=saliency, masks=masks.bool(), images=torch.zeros(n, 1, h, w))


def random_batch(n: int = 6, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    saliency = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    masks = torch.rand(n, size, size, generator=g) < torch.linspace(0.1, 0.6, n).view(n, 1, 1)
    # A correlated map, so scores are neither trivial nor all near 0.5.
    saliency = saliency + 0.5 * masks
    return saliency, masks


@pytest.mark.parametrize("name", ["dice", "auroc", "mass_in_mask", "pointing_game", "top_k_intersection"])
def test_localisation_metrics_are_registered_per_image(name: str) -> None:
    m = metric(name)
    assert isinstance(m, Metric)
    assert m.scope == "image"


def reference_binarisation(saliency: np.ndarray, mask_size: int, mode: str, percentile: float) -> np.ndarray:
    """The binarisations spelled out with numpy and scikit-image, one image at a time."""
    flat = saliency.ravel()
    if mode == "topk":
        chosen = np.zeros(flat.size, dtype=bool)
        chosen[np.argsort(-flat, kind="stable")[:mask_size]] = True
        return chosen.reshape(saliency.shape)
    if mode == "percentile":
        return saliency > np.percentile(flat, percentile)
    filters = pytest.importorskip("skimage.filters")
    return saliency > filters.threshold_otsu(saliency, nbins=256)


@pytest.mark.parametrize("mode", ["topk", "otsu", "percentile"])
def test_dice_equals_monai_compute_dice_on_the_same_binarisation(mode: str) -> None:
    saliency, masks = random_batch()
    binarised = np.stack(
        [reference_binarisation(s.numpy(), int(m.sum()), mode, 75.0) for s, m in zip(saliency, masks, strict=True)]
    )
    expected = compute_dice(
        torch.from_numpy(binarised).unsqueeze(1).float(), masks.unsqueeze(1).float(), include_background=True
    ).squeeze(1)
    got = metric("dice", binarize=mode, percentile=75.0)(inputs(saliency, masks))
    torch.testing.assert_close(got, expected.to(got.dtype))


def test_dice_topk_hand_worked_example() -> None:
    saliency = torch.tensor([[[0.9, 0.1, 0.8], [0.2, 0.7, 0.0]]])
    masks = torch.tensor([[[1, 1, 0], [0, 0, 0]]])
    # k = |M| = 2 picks 0.9 and 0.8; one of them is in the mask: 2 * 1 / (2 + 2).
    assert metric("dice")(inputs(saliency, masks)).item() == pytest.approx(0.5)


def test_dice_percentile_hand_worked_example() -> None:
    saliency = torch.arange(10.0).view(1, 2, 5)
    masks = torch.tensor([[[1, 0, 0, 0, 0], [0, 0, 1, 1, 1]]])
    # The 50th percentile of 0..9 is 4.5, so S = {5..9}; S ∩ M = {7, 8, 9}: 2 * 3 / (5 + 4).
    got = metric("dice", binarize="percentile", percentile=50.0)(inputs(saliency, masks))
    assert got.item() == pytest.approx(6 / 9)


def test_dice_topk_breaks_ties_towards_the_earlier_pixel() -> None:
    saliency = torch.ones(1, 2, 2)
    first_two = torch.tensor([[[1, 1], [0, 0]]])
    last_two = torch.tensor([[[0, 0], [1, 1]]])
    dice = metric("dice")
    assert dice(inputs(saliency, first_two)).item() == 1.0
    assert dice(inputs(saliency, last_two)).item() == 0.0


@pytest.mark.parametrize("mode", ["topk", "otsu", "percentile"])
def test_dice_is_nan_for_an_empty_mask_and_only_there(mode: str) -> None:
    saliency, masks = random_batch(n=3)
    masks[1] = False
    got = metric("dice", binarize=mode)(inputs(saliency, masks))
    assert torch.isnan(got[1])
    assert torch.isfinite(got[[0, 2]]).all()


def test_otsu_threshold_matches_scikit_image() -> None:
    filters = pytest.importorskip("skimage.filters")
    g = torch.Generator().manual_seed(1)
    low = torch.randn(4, 300, generator=g, dtype=torch.float64)
    high = 3 + torch.randn(4, 200, generator=g, dtype=torch.float64)
    bimodal = torch.cat([low, high], dim=1)
    maps = torch.cat([bimodal, torch.rand(2, 500, generator=g, dtype=torch.float64) ** 3])
    expected = torch.tensor([filters.threshold_otsu(row.numpy(), nbins=256) for row in maps], dtype=torch.float64)
    torch.testing.assert_close(otsu_threshold(maps), expected)


def brute_force_otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu by trying every split of the histogram and computing each class from scratch."""
    counts, edges = np.histogram(values, bins=bins, range=(values.min(), values.max()))
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_variance = centres[0], -1.0
    for split in range(1, bins):
        w0, w1 = counts[:split].sum(), counts[split:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (counts[:split] * centres[:split]).sum() / w0
        m1 = (counts[split:] * centres[split:]).sum() / w1
        variance = w0 * w1 * (m0 - m1) ** 2
        if variance > best_variance:
            best, best_variance = centres[split - 1], variance
    return float(best)


def test_otsu_threshold_matches_a_brute_force_search() -> None:
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(5, 400, generator=g, dtype=torch.float64) ** torch.tensor([[0.5], [1.0], [2.0], [4.0], [8.0]])
    expected = torch.tensor([brute_force_otsu(row.numpy()) for row in maps], dtype=torch.float64)
    torch.testing.assert_close(otsu_threshold(maps), expected)


def test_otsu_threshold_of_a_constant_map_is_its_value() -> None:
    assert otsu_threshold(torch.full((1, 16), 0.25)).item() == 0.25


def test_auroc_equals_sklearn_per_image() -> None:
    saliency, masks = random_batch()
    expected = [roc_auc_score(m.ravel().numpy(), s.ravel().numpy()) for s, m in zip(saliency, masks, strict=True)]
    got = metric("auroc")(inputs(saliency, masks))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype))


def test_auroc_averages_ranks_over_ties_as_sklearn_does() -> None:
    saliency, masks = random_batch()
    tied = (saliency * 2).floor()  # three levels only: most pixels tie
    expected = [roc_auc_score(m.ravel().numpy(), s.ravel().numpy()) for s, m in zip(tied, masks, strict=True)]
    got = metric("auroc")(inputs(tied, masks))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype))


def test_auroc_is_half_for_a_constant_map() -> None:
    _, masks = random_batch(n=2)
    assert metric("auroc")(inputs(torch.zeros(2, 12, 12), masks)).tolist() == [0.5, 0.5]


def test_auroc_is_nan_for_an_empty_or_full_mask() -> None:
    saliency, masks = random_batch(n=3)
    masks[0], masks[2] = False, True
    got = metric("auroc")(inputs(saliency, masks))
    assert torch.isnan(got[[0, 2]]).all()
    assert torch.isfinite(got[1])


def test_mass_in_mask_hand_worked_example() -> None:
    saliency = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
    masks = torch.tensor([[[0, 1], [1, 0]]])
    assert metric("mass_in_mask")(inputs(saliency, masks)).item() == pytest.approx(3 / 8)


def test_mass_in_mask_is_nan_for_an_empty_mask_or_an_all_zero_map() -> None:
    saliency = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]], [[1.0, 1.0]]])
    masks = torch.tensor([[[0, 0]], [[1, 0]], [[1, 0]]])
    got = metric("mass_in_mask")(inputs(saliency, masks))
    assert torch.isnan(got[:2]).all()
    assert got[2].item() == 0.5


@pytest.mark.parametrize("name", ["dice", "auroc", "mass_in_mask"])
def test_image_metrics_return_one_float32_value_per_image_for_half_precision_maps(name: str) -> None:
    saliency, masks = random_batch(n=4)
    got = metric(name)(inputs(saliency.to(torch.bfloat16), masks))
    assert got.shape == (4,)
    assert got.dtype == torch.float32
    assert got.device == saliency.device


# --- against Quantus -----------------------------------------------------------------------

N, SIZE = 8, 10


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
