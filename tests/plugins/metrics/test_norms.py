"""Embedding-norm metrics: per-image norms of the representation, and a small norm as an out-of-distribution flag."""

from __future__ import annotations

import functools

import pytest
import torch
from sklearn.metrics import roc_auc_score

from benchsuite.api import MetricInputs, check_metric_output
from benchsuite.testing import check_metric
from benchsuite_plugins.metrics.norms import auroc, controls
from tests.conftest import component, metric_inputs

metric = functools.partial(component, "metrics")


def inputs(images: torch.Tensor, represent, seed: int = 0) -> MetricInputs:
    n, _, h, w = images.shape
    return metric_inputs(
        saliency=torch.rand(n, h, w),
        masks=torch.ones(n, h, w, dtype=torch.bool),
        images=images,
        epoch_loss=torch.ones(1),
        theta=90.0,
        train_images=images,
        embed=lambda x: torch.nn.functional.normalize(represent(x), dim=1),
        augment=lambda x: (x, x),
        seed=seed,
        represent=represent,
        train_masks=torch.ones(n, h, w, dtype=torch.bool),
    )


def smooth_images(n: int = 24, size: int = 12) -> torch.Tensor:
    """Blobs: neighbouring pixels alike, which a pixel shuffle destroys."""
    g = torch.Generator().manual_seed(3)
    centres = torch.rand(n, 2, generator=g) * size
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = (y[None] - centres[:, 0, None, None]) ** 2 + (x[None] - centres[:, 1, None, None]) ** 2
    return torch.exp(-distance / 8.0)[:, None]


def smoothness(x: torch.Tensor) -> torch.Tensor:
    """A representation whose norm grows with how alike neighbouring pixels are: large for blobs, small for shuffles."""
    return torch.stack([(x[..., 1:, :] * x[..., :-1, :]).flatten(1).sum(1), (x[..., 1:] * x[..., :-1]).flatten(1).sum(1)], 1)


@pytest.mark.parametrize("name", ["embedding_norm", "norm_ood_auroc"])
def test_the_norm_metrics_pass_the_metric_contract(name):
    check_metric(name)


def test_embedding_norm_is_defined_for_an_image_with_an_empty_mask():
    # It reads no map and no mask (reads_saliency = False), so an empty mask is no reason for NaN.
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    given = inputs(images, lambda x: x.flatten(1))
    given.masks[0] = False
    assert torch.isfinite(metric("embedding_norm")(given)).all()


def test_embedding_norm_is_the_l2_norm_of_each_representation():
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    norm = metric("embedding_norm")
    values = check_metric_output(norm, norm(inputs(images, lambda x: 3 * x.flatten(1))), len(images))
    torch.testing.assert_close(values, 3 * images.flatten(1).norm(dim=1))


def test_the_auroc_is_scikit_learns_ties_included():
    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randint(0, 5, (30,), generator=g).double(), torch.randint(0, 5, (40,), generator=g).double()
    expected = roc_auc_score([1] * 30 + [0] * 40, torch.cat([pos, neg]).numpy())
    assert auroc(pos, neg).item() == pytest.approx(expected, abs=1e-12)


def test_a_representation_that_shrinks_on_shuffled_images_flags_them_and_one_blind_to_them_does_not():
    images = smooth_images()
    flags = metric("norm_ood_auroc", control="shuffled")
    assert flags(inputs(images, smoothness)).item() > 0.95  # structure-aware: shuffled controls have small norms
    # A representation of the intensity histogram alone: a shuffle keeps it, so its norm cannot tell.
    assert flags(inputs(images, lambda x: x.flatten(1).sort(dim=1).values)).item() == pytest.approx(0.5)


def test_the_noise_control_is_scored_by_the_same_rule():
    # Mean intensity: the uniform noise is brighter on average than the dark-background blobs, so
    # its norm is larger and a small norm flags none of it (AUROC near 0, reported as it is).
    images = smooth_images()
    value = metric("norm_ood_auroc", control="noise")(inputs(images, lambda x: x.flatten(1).mean(1, keepdim=True))).item()
    assert value < 0.05


def test_controls_keep_each_images_pixels_or_range_and_follow_the_seed():
    images = smooth_images(4)
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    shuffled = controls(images, "shuffled", g(0))
    assert torch.equal(shuffled.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)
    assert not torch.equal(shuffled, images) and torch.equal(shuffled, controls(images, "shuffled", g(0)))
    noise = controls(images, "noise", g(0))
    assert (noise.flatten(1).min(1).values >= images.flatten(1).min(1).values).all()
    assert (noise.flatten(1).max(1).values <= images.flatten(1).max(1).values).all()
    assert not torch.equal(noise, controls(images, "noise", g(1)))
