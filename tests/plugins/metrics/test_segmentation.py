"""segmentation_dice: fine-tune the encoder with a decoder on a few labelled images, Dice on the held-out ones."""

from __future__ import annotations

import functools
import textwrap

import pytest
import torch
from monai.losses import DiceLoss
from monai.metrics import DiceMetric
from torch import nn

from benchsuite.api import DataSpec, ImageMaskSet, MetricInputs, PluginError
from benchsuite.engine.building import load_data
from benchsuite.engine.data import load_dataset
from benchsuite.engine.grid import expand
from benchsuite.engine.pipeline import run_group
from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from benchsuite_plugins.metrics.localisation import hard_dice
from benchsuite_plugins.metrics.segmentation import labelled_split, soft_dice_loss, upsamplings
from tests.conftest import component, metric_inputs
from tests.core.test_suite import VALID

SIZE = 32
N_EVAL = 32


metric = functools.partial(component, "metrics", "segmentation_dice")


def encoder(name: str = "small_cnn", seed: int = 0) -> nn.Module:
    component = default_registry().get("encoders", name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return component.factory(component.params(), 1, SIZE).eval()


class Blind(nn.Module):
    """A useless encoder: the same feature map whatever the image, so a decoder can learn only a prior."""

    out_dim = 8

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(x), self.out_dim, x.shape[-2] // 8, x.shape[-1] // 8, device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def shapes() -> ImageMaskSet:
    """symmetric_shapes at 32 px, each star rolled with its mask by up to 8 px, so a centred prior is not enough.

    Centred, the stars are so alike that a decoder on a constant feature map (a learnt prior
    disc) already scores a held-out Dice of 0.78; shifted, it scores 0.50.
    """
    component = default_registry().get("datasets", "symmetric_shapes")
    data = component.factory(component.params(n_images=128), DataSpec(size=SIZE))
    shifts = torch.randint(-8, 9, (len(data), 2), generator=torch.Generator().manual_seed(0)).tolist()
    images = torch.stack([x.roll(tuple(s), dims=(-2, -1)) for x, s in zip(data.images, shifts, strict=True)])
    masks = torch.stack([m.roll(tuple(s), dims=(-2, -1)) for m, s in zip(data.masks, shifts, strict=True)])
    return ImageMaskSet(images, masks)


def inputs(data: ImageMaskSet, enc: nn.Module | None, seed: int = 0) -> MetricInputs:
    images, masks = data.images[:N_EVAL], data.masks[:N_EVAL]
    return metric_inputs(
        saliency=torch.full(masks.shape, float("nan")),
        masks=masks,
        images=images,
        epoch_loss=torch.zeros(1),
        theta=0.0,
        train_images=data.images[N_EVAL:],
        embed=lambda x: x.flatten(1),
        augment=lambda x: (x, x),
        seed=seed,
        represent=lambda x: x.flatten(1),
        train_masks=data.masks[N_EVAL:],
        encoder=enc,
    )


def test_soft_dice_loss_is_monais_dice_loss_with_sigmoid():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(6, 1, 12, 12, generator=g, dtype=torch.float64)
    masks = torch.rand(6, 1, 12, 12, generator=g) < 0.3
    masks[2] = False  # an empty mask
    expected = DiceLoss(sigmoid=True)(logits, masks.double())
    torch.testing.assert_close(soft_dice_loss(logits[:, 0], masks[:, 0]), expected)


def test_hard_dice_is_monais_dice_metric_with_nan_for_an_empty_mask():
    g = torch.Generator().manual_seed(1)
    predicted = torch.rand(7, 10, 10, generator=g) < 0.4
    masks = torch.rand(7, 10, 10, generator=g) < 0.3
    predicted[1] = masks[1]  # perfect: 1
    predicted[2] = False  # nothing predicted: 0
    masks[3] = False  # empty mask: NaN
    masks[4], predicted[4] = False, False  # both empty: NaN too (MONAI's ignore_empty)
    predicted[5] = ~masks[5]  # disjoint: 0
    expected = DiceMetric(include_background=True, reduction="none")(predicted[:, None].float(), masks[:, None].float())[:, 0]
    values = hard_dice(predicted, masks)
    torch.testing.assert_close(values, expected.double(), equal_nan=True)
    assert values[1] == 1 and values[2] == 0 and values[5] == 0 and values[3:5].isnan().all()


def test_a_trained_encoder_segments_the_shapes_and_a_blind_one_only_learns_a_prior(shapes):
    # A randomly initialised small CNN fine-tuned on 24 labelled images (measured 0.78 mean Dice,
    # seeds 0 and 1), against a constant feature map with the encoder frozen (measured 0.50; an
    # all-foreground prediction scores about 0.37).
    tuned = metric(fraction=0.25)(inputs(shapes, encoder()))
    blind = metric(fraction=0.25, freeze_encoder=True)(inputs(shapes, Blind()))
    assert tuned.shape == blind.shape == (N_EVAL,)
    assert tuned.isfinite().all(), "every held-out star has a mask"
    assert tuned.mean() > 0.7
    assert blind.mean() < 0.6
    assert tuned.mean() > blind.mean() + 0.15


def test_the_seed_decides_every_draw(shapes):
    small = ImageMaskSet(shapes.images[:64], shapes.masks[:64])
    run = metric(epochs=3, fraction=0.5)
    first, again, other = run(inputs(small, encoder(), 0)), run(inputs(small, encoder(), 0)), run(inputs(small, encoder(), 1))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_the_cells_encoder_and_the_global_random_state_are_left_as_they_were(shapes):
    small = ImageMaskSet(shapes.images[:48], shapes.masks[:48])
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    rng = torch.get_rng_state()
    metric(epochs=2, fraction=0.5)(inputs(small, enc))
    assert not enc.training
    assert all(p.requires_grad and p.grad is None for p in enc.parameters())
    for key, value in enc.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_empty_mask_gives_nan_and_the_others_a_number(shapes):
    masks = shapes.masks.clone()
    masks[3] = False
    values = metric(epochs=2, fraction=0.5)(inputs(ImageMaskSet(shapes.images[:48], masks[:48]), encoder()))
    assert values[3].isnan()
    assert values[torch.arange(N_EVAL) != 3].isfinite().all()


def test_an_encoder_without_feature_map_or_none_is_a_plugin_error(shapes):
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(PluginError, match=r"encoder Sequential has no feature_map\(x\)"):
        metric()(inputs(shapes, pooled))
    with pytest.raises(PluginError, match="keeps no `encoder`"):
        metric()(inputs(shapes, None))


@pytest.mark.parametrize(("fraction", "batch_size"), [(0.5, 16), (0.1, 1)])
def test_a_resnet_with_batch_norm_fine_tunes_from_its_one_pixel_feature_map(shapes, fraction, batch_size):
    # Its BatchNorm sees one value per channel at 1 x 1, so no batch may hold one image alone,
    # not with the fewest labelled images (two to fit) nor with a batch size of 1.
    small = ImageMaskSet(shapes.images[:48], shapes.masks[:48])
    values = metric(epochs=1, fraction=fraction, batch_size=batch_size)(inputs(small, encoder("resnet18")))
    assert values.shape == (N_EVAL,) and values.isfinite().all()


@pytest.mark.parametrize(
    ("n", "fraction", "validation", "fit", "held"),
    [(224, 0.1, 0.25, 16, 6), (10, 0.1, 0.25, 2, 1), (3, 1.0, 0.5, 2, 1), (8, 1.0, 0.9, 2, 6), (40, 0.5, 0.01, 19, 1)],
)
def test_labelled_split_sizes(n, fraction, validation, fit, held):
    fitted, validated = labelled_split(n, fraction, validation, torch.Generator().manual_seed(0))
    assert (len(fitted), len(validated)) == (fit, held)
    assert len(set(fitted.tolist()) | set(validated.tolist())) == fit + held


@pytest.mark.parametrize(
    ("feature", "image", "expected"), [((4, 4), (32, 32), 3), ((1, 1), (32, 32), 5), ((7, 7), (224, 224), 5), ((3, 3), (3, 3), 0)]
)
def test_upsamplings_reach_the_image_size(feature, image, expected):
    assert upsamplings(feature, image) == expected


def test_a_cell_passes_its_encoder_and_training_masks_to_the_metric(tmp_path):
    suite = VALID.replace(
        "metrics: [dice, final_loss]", "metrics: [{plugin: segmentation_dice, params: {epochs: 2, fraction: 0.5}}]"
    )
    (tmp_path / "suite.yaml").write_text(textwrap.dedent(suite))
    registry = default_registry()
    cell = expand(load_suite(tmp_path / "suite.yaml", registry))[1]
    data = load_data(cell, registry, torch.device("cpu"))
    full = load_dataset(cell.component("datasets"), cell.data.size, registry)
    for image, mask in zip(data.train, data.train_masks, strict=True):
        (index,) = [i for i, x in enumerate(full.images) if torch.equal(x, image)]
        assert torch.equal(mask, full.masks[index])
    (result,) = run_group([cell], torch.device("cpu"), registry=registry)
    values = result.image_metrics["segmentation_dice"]
    assert values.shape == (4,)
