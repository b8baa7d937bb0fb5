"""The built-in metrics, checked against MONAI, scikit-learn, scikit-image and hand-worked cases."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice
from sklearn.metrics import roc_auc_score

from benchsuite.api import Metric, MetricInputs
from benchsuite_plugins.metrics.localisation import otsu_threshold
from tests.conftest import component, metric_inputs

metric = functools.partial(component, "metrics")


def inputs(saliency: torch.Tensor, masks: torch.Tensor, epoch_loss: torch.Tensor | None = None) -> MetricInputs:
    n, h, w = saliency.shape
    return metric_inputs(
        saliency=saliency,
        masks=masks.bool(),
        images=torch.zeros(n, 1, h, w),
        epoch_loss=torch.tensor([1.0]) if epoch_loss is None else epoch_loss,
        theta=0.0,
        train_images=torch.zeros(2, 1, h, w),
        embed=lambda x: x.flatten(1),
        augment=lambda x: (x, x),
        seed=0,
        represent=lambda x: x.flatten(1),
        train_masks=torch.zeros(2, h, w, dtype=torch.bool),
    )


def random_batch(n: int = 6, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    saliency = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    masks = torch.rand(n, size, size, generator=g) < torch.linspace(0.1, 0.6, n).view(n, 1, 1)
    # A correlated map, so scores are neither trivial nor all near 0.5.
    saliency = saliency + 0.5 * masks
    return saliency, masks


@pytest.mark.parametrize(
    ("name", "scope"), [("dice", "image"), ("auroc", "image"), ("mass_in_mask", "image"), ("final_loss", "cell")]
)
def test_metrics_are_registered_with_their_scope(name: str, scope: str) -> None:
    m = metric(name)
    assert isinstance(m, Metric)
    assert m.scope == scope


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


def test_final_loss_is_the_last_epochs_loss_as_a_scalar() -> None:
    saliency, masks = random_batch(n=2)
    got = metric("final_loss")(inputs(saliency, masks, epoch_loss=torch.tensor([3.0, 2.5, 1.75])))
    assert got.ndim == 0
    assert got.item() == 1.75


def test_final_loss_is_nan_without_any_epoch() -> None:
    saliency, masks = random_batch(n=2)
    assert math.isnan(metric("final_loss")(inputs(saliency, masks, epoch_loss=torch.empty(0))).item())


@pytest.mark.parametrize("name", ["dice", "auroc", "mass_in_mask"])
def test_image_metrics_return_one_float32_value_per_image_for_half_precision_maps(name: str) -> None:
    saliency, masks = random_batch(n=4)
    got = metric(name)(inputs(saliency.to(torch.bfloat16), masks))
    assert got.shape == (4,)
    assert got.dtype == torch.float32
    assert got.device == saliency.device
