"""``view_consistency``: the cosine of the embeddings of each held-out image's two views."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from benchsuite.api import MetricInputs
from benchsuite.engine.registry import default_registry
from benchsuite.engine.views import draw_generator, fresh_pair
from benchsuite.testing import check_metric
from tests.conftest import component, metric_inputs

metric = functools.partial(component, "metrics", "view_consistency")


def random_views(**params):
    found = default_registry().get("augmentations", "random_views")
    return found.factory(found.params(**params))


def inputs(augment, embed, represent=None, seed: int = 0) -> MetricInputs:
    """Held-out images with the cell's pair maker as the pipeline builds it (a fresh draw per call)."""
    # Smooth images (a 4 x 4 pattern interpolated), so that mild augmentation keeps most of their content.
    coarse = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    images = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    views = draw_generator(seed, "metrics", images.device)
    return metric_inputs(
        saliency=torch.full((6, 16, 16), float("nan")),  # undefined maps: the metric does not read them
        masks=torch.zeros(6, 16, 16, dtype=torch.bool),  # empty masks: nor these
        images=images,
        epoch_loss=torch.tensor([1.0]),
        theta=30.0,
        train_images=images,
        embed=embed,
        augment=functools.partial(fresh_pair, augment, theta=30.0, generator=views),
        seed=seed,
        represent=represent or embed,
        train_masks=torch.zeros(6, 16, 16, dtype=torch.bool),
    )


def flat(x):
    """The pixels about their mean: an embedding that every change of the image moves."""
    x = x.flatten(1)
    return x - x.mean(dim=1, keepdim=True)


def test_it_meets_the_metric_contract_with_neither_maps_nor_masks():
    check_metric("view_consistency")


def test_it_is_the_cosine_of_the_two_views_averaged_over_draws():
    augment = random_views()
    got = metric(draws=3)(inputs(augment, flat))
    replay = inputs(augment, flat)  # the same generator seed: the same three draws in turn
    want = torch.stack([F.cosine_similarity(*(flat(v) for v in replay.augment(replay.images)), dim=1) for _ in range(3)])
    torch.testing.assert_close(got, want.mean(dim=0))
    assert got.shape == (6,) and torch.isfinite(got).all()


def test_an_embedding_invariant_to_the_pair_scores_one_and_a_sensitive_one_less():
    # The mean intensity does not change under a quarter turn; the raw pixels do.
    rotation = default_registry().get("augmentations", "rotation")
    turn = rotation.factory(rotation.params())
    quarter = inputs(turn, lambda x: x.mean(dim=(2, 3)))
    quarter = MetricInputs(**{**quarter.__dict__, "augment": lambda x: turn(x, 90.0)})
    torch.testing.assert_close(metric(draws=1)(quarter), torch.ones(6))
    pixels = MetricInputs(**{**quarter.__dict__, "embed": flat})
    assert (metric(draws=1)(pixels) < 0.9).all()


def test_space_represent_compares_the_encoders_representation():
    augment = random_views()
    both = inputs(augment, embed=lambda x: torch.ones(len(x), 2), represent=flat)
    torch.testing.assert_close(metric(space="embed")(both), torch.ones(6))
    assert (metric(space="represent")(inputs(augment, embed=lambda x: torch.ones(len(x), 2), represent=flat)) < 1).all()


def test_stronger_views_are_less_consistent_for_a_fixed_embedding():
    mild = metric(draws=8)(inputs(random_views(strength=0.1, rotation="random"), flat))
    strong = metric(draws=8)(inputs(random_views(strength=1.0, rotation="random"), flat))
    assert mild.mean() > strong.mean() + 0.05
