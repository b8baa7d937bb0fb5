"""The ``icbm152`` dataset: MRI slices from the template bundled with nilearn, no download."""

from __future__ import annotations

import socket

import pytest
import torch
from pydantic import ValidationError

from benchsuite.api import DataSpec, ImageMaskSet, PluginError
from benchsuite.engine.registry import default_registry

SIZE = 32


def build(size: int = SIZE, **params: object) -> ImageMaskSet:
    """Build ``icbm152`` through the installed entry points, as the core does."""
    component = default_registry().get("datasets", "icbm152")
    return component.factory(component.params.model_validate(params), DataSpec(size))


@pytest.fixture(scope="module")
def grey() -> ImageMaskSet:
    return build()


@pytest.fixture(scope="module")
def middle_slices() -> dict[str, ImageMaskSet]:
    """Both tissues on the same 20 mid-brain slices, none of them dropped."""
    return {tissue: build(tissue=tissue, slices=(30, 50), min_foreground=0) for tissue in ("gm", "wm")}


def test_defaults_are_grey_matter_at_half_probability_on_the_2mm_template() -> None:
    params = default_registry().get("datasets", "icbm152").params()
    assert (params.tissue, params.threshold, params.resolution, params.slices) == ("gm", 0.5, 2, None)


def test_defaults_give_a_few_dozen_single_channel_slices(grey: ImageMaskSet) -> None:
    assert 40 <= len(grey) <= 150
    assert grey.images.shape[1:] == (1, SIZE, SIZE) and grey.images.dtype == torch.float32
    assert grey.masks.shape[1:] == (SIZE, SIZE) and grey.masks.dtype == torch.bool


def test_intensities_span_zero_background_to_one(grey: ImageMaskSet) -> None:
    assert grey.images.min() == 0 and grey.images[:, :, 0, 0].eq(0).all()
    assert 0.99 < grey.images.max() <= 1


def test_every_mask_covers_a_plausible_fraction_of_its_slice(grey: ImageMaskSet) -> None:
    fraction = grey.masks.flatten(1).float().mean(dim=1)
    assert fraction.min() >= 0.01
    assert 0.05 < fraction.mean() < 0.3


def test_masks_lie_inside_the_brain(grey: ImageMaskSet) -> None:
    assert grey.images[:, 0][grey.masks].gt(0).all()


def test_anterior_is_up_so_the_cerebellum_sits_low_in_inferior_slices() -> None:
    # Slices 5-14 at 2 mm lie 40-60 mm below the origin, where grey matter is mostly cerebellum,
    # which is posterior: with anterior up, its centre of mass is in the lower half of the image.
    masks = build(slices=(5, 15), min_foreground=0).masks.float()
    rows = torch.arange(SIZE, dtype=torch.float32)
    centre_row = (masks.sum(dim=2) * rows).sum(dim=1) / masks.sum(dim=(1, 2))
    assert (centre_row > (SIZE - 1) / 2 + 2).all()


def test_tissue_changes_the_masks_but_not_the_images(middle_slices: dict[str, ImageMaskSet]) -> None:
    grey_matter, white_matter = middle_slices["gm"], middle_slices["wm"]
    assert torch.equal(grey_matter.images, white_matter.images)
    assert not torch.equal(grey_matter.masks, white_matter.masks)


def test_grey_and_white_matter_masks_barely_overlap(middle_slices: dict[str, ImageMaskSet]) -> None:
    # Tissue probabilities sum to at most 1, so both can exceed 0.5 only through rounding.
    grey_matter, white_matter = middle_slices["gm"].masks, middle_slices["wm"].masks
    assert (grey_matter & white_matter).sum() <= 0.01 * (grey_matter | white_matter).sum()


def test_slice_range_and_stride_pick_the_slices(middle_slices: dict[str, ImageMaskSet]) -> None:
    strided = build(slices=(30, 50), stride=2, min_foreground=0)
    assert len(middle_slices["gm"]) == 20
    assert torch.equal(strided.images, middle_slices["gm"].images[::2])


def test_a_higher_threshold_shrinks_each_mask_to_a_subset(middle_slices: dict[str, ImageMaskSet]) -> None:
    strict = build(slices=(30, 50), min_foreground=0, threshold=0.8).masks
    loose = middle_slices["gm"].masks
    assert not (strict & ~loose).any()
    assert strict.sum() < loose.sum()


def test_slices_beyond_the_volume_raise_an_error_naming_the_valid_range() -> None:
    from nilearn.datasets import load_mni152_template

    depth = load_mni152_template(resolution=1).shape[2]
    with pytest.raises(PluginError, match=rf"\[0, {depth}\)"):
        build(resolution=1, slices=(10, depth + 1))


def test_an_empty_slice_range_is_refused() -> None:
    params = default_registry().get("datasets", "icbm152").params
    with pytest.raises(ValidationError, match="start < stop"):
        params.model_validate({"slices": [40, 40]})


def test_building_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("icbm152 tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert len(build(resolution=1, tissue="wm", slices=(80, 90))) == 10
