"""The ``random_views`` augmentation: per-image draws, the strength knob, weak/strong pairs, kornia as the oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.geometry.transform import crop_and_resize, rotate
from torch import Tensor

from benchsuite.api import Draw, PluginError
from benchsuite.engine.registry import default_registry
from benchsuite.engine.views import FixedPair, draw_generator, fresh_pair, is_random
from benchsuite_plugins.augmentations.random_views import RandomViews, _affine
from benchsuite_plugins.augmentations.rotation import Rotation, RotationParams

SIZE = 16


def views(**params) -> RandomViews:
    found = default_registry().get("augmentations", "random_views")
    return found.factory(found.params(**params))


def images(n: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows(draw: Draw, index: Tensor) -> Draw:
    return {name: t[index] for name, t in draw.items()}


def pair(augment: RandomViews, x: Tensor, theta: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    return augment(x, theta, augment.draw(x, theta, generator(seed)))


# -- the convention and exactness the core relies on


def test_it_is_a_random_augmentation_and_rotation_is_not():
    assert is_random(views()) and not is_random(Rotation(RotationParams()))


def test_at_strength_zero_and_theta_zero_both_views_are_the_images_bit_for_bit():
    x = images()
    view1, view2 = pair(views(strength=0.0), x, 0.0)
    assert torch.equal(view1, x) and torch.equal(view2, x)


@pytest.mark.parametrize("theta", [90.0, 37.5, -120.0])
def test_at_strength_zero_a_fixed_turn_is_the_rotation_augmentations_pair(theta):
    x = images()
    want = Rotation(RotationParams())(x, theta)
    got = pair(views(strength=0.0), x, theta)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_weak_zero_keeps_the_first_view_and_augments_the_second():
    x = images()
    view1, view2 = pair(views(strength=1.0, weak=0.0), x, 0.0)
    assert torch.equal(view1, x)
    assert (view2 - x).abs().flatten(1).amax(dim=1).min() > 0.01


def test_the_views_change_more_as_strength_grows():
    # The same random numbers at every strength (common random numbers), scaled: distance to
    # the image grows with strength, on average over images and views.
    x = images(n=32)
    change = []
    for strength in (0.0, 0.25, 0.5, 1.0):
        view1, view2 = pair(views(strength=strength), x, 0.0)
        change.append(float(((view1 - x).abs().mean() + (view2 - x).abs().mean()) / 2))
    assert change[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(change)), change


# -- draws: per image, per view, reproducible, row-aligned


def test_every_image_and_view_gets_its_own_draw():
    draw = views().draw(images(n=8), 0.0, generator())
    for name in ("affine", "brightness", "contrast", "noise"):
        first, second = draw[f"{name}1"], draw[f"{name}2"]
        assert not torch.equal(first, second), name
    affine = draw["affine1"].flatten(1)
    assert len(torch.unique(affine, dim=0)) == 8  # no two images share a crop


def test_the_same_generator_seed_gives_the_same_views_and_another_seed_others():
    x, augment = images(), views()
    first, again, other = pair(augment, x, 30.0, seed=5), pair(augment, x, 30.0, seed=5), pair(augment, x, 30.0, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


def test_rows_of_a_draw_give_the_rows_of_the_views():
    # What a fixed draw per image relies on: any subset or repetition of the rows, with the
    # matching rows of the draw, gives the same views as the whole batch (no batch statistics,
    # one blur kernel size whatever the batch's largest sigma).
    x, augment = images(n=8), views(blur_sigma=3.0)
    draw = augment.draw(x, 45.0, generator())
    whole = augment(x, 45.0, draw)
    index = torch.tensor([5, 5, 0, 7, 2])
    part = augment(x[index], 45.0, rows(draw, index))
    for got, want in zip(part, whole, strict=True):
        torch.testing.assert_close(got, want[index], rtol=0, atol=1e-12)


def test_the_views_keep_the_images_dtype():
    x = images(dtype=torch.float32)
    draw = views().draw(x, 10.0, generator())
    assert all(v.dtype == torch.float32 for v in views()(x, 10.0, draw))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: on the CPU every tensor is on the generator's device")
def test_the_draw_lives_on_the_generators_device():
    x = images(dtype=torch.float32).cuda()
    draw = views().draw(x, 10.0, torch.Generator(device="cuda").manual_seed(0))
    assert all(t.device == x.device for t in draw.values())


def test_the_views_are_differentiable_in_the_images():
    x = images().requires_grad_(True)
    view1, view2 = pair(views(), x, 30.0)
    (view1.square().sum() + view2.square().sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_non_square_images_are_refused_with_a_clear_error():
    with pytest.raises(PluginError, match="square"):
        views().draw(torch.rand(2, 1, 8, 12), 0.0, generator())


# -- geometry against kornia


def test_a_crop_is_kornias_crop_and_resize_of_the_same_box():
    x = images()
    half, centre = torch.tensor([[0.5, 0.7]], dtype=x.dtype), torch.tensor([[0.2, -0.1]], dtype=x.dtype)
    affine = _affine(half, centre, torch.zeros(1, dtype=x.dtype)).expand(len(x), 2, 3)
    ours = views()._warp(x, affine)

    # The box whose corner pixel centres the output's corner pixels sample, in pixel coordinates.
    def pixel(u: Tensor) -> Tensor:
        return ((u + 1) * SIZE - 1) / 2

    low, high = pixel(centre - half * (1 - 1 / SIZE))[0].tolist(), pixel(centre + half * (1 - 1 / SIZE))[0].tolist()
    box = torch.tensor([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]], [low[0], high[1]]], dtype=x.dtype)
    theirs = crop_and_resize(x, box.expand(len(x), 4, 2), (SIZE, SIZE), align_corners=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_a_random_turn_is_kornias_rotate_counter_clockwise():
    x = images()
    angles = torch.linspace(-170, 170, len(x), dtype=x.dtype)
    affine = _affine(torch.ones(len(x), 2, dtype=x.dtype), torch.zeros(len(x), 2, dtype=x.dtype), angles)
    torch.testing.assert_close(views()._warp(x, affine), rotate(x, angles, align_corners=True), rtol=0, atol=1e-12)


def test_random_rotation_draws_angles_within_plus_minus_theta_and_none_at_zero():
    x = images(n=64)
    augment = views(rotation="random", strength=0.0)
    draw = augment.draw(x, 30.0, generator())
    linear = draw["affine2"][:, :, :2]
    angles = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angles.abs().max() <= 30.0 + 1e-4 and angles.abs().max() > 25.0
    assert angles.std() > 10  # spread over the range, not one angle
    view1, view2 = pair(augment, x, 0.0)
    assert torch.equal(view1, x) and torch.equal(view2, x)


def test_flips_mirror_the_image_exactly_enough():
    x = images()
    augment = views(strength=1.0, crop_scale=1.0, crop_ratio=1.0, hflip=1.0, vflip=0.0, brightness=0.0, contrast=0.0, noise=0.0)
    draw = augment.draw(x, 0.0, generator())
    draw = {**draw, "sigma1": torch.zeros(len(x)), "sigma2": torch.zeros(len(x))}
    view1, _ = augment(x, 0.0, draw)
    torch.testing.assert_close(view1, torch.flip(x, dims=(-1,)), rtol=0, atol=1e-12)


# -- what the core does with it


def test_a_fixed_pair_gives_every_row_of_an_image_that_images_draw():
    x, augment = images(n=4), views()
    fixed = FixedPair(augment, x, 20.0, generator(3))
    repeated = torch.tensor([0, 0, 1, 3, 3, 3])
    got = fixed(x[repeated], repeated)
    want = augment(x, 20.0, fixed.draw)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w[repeated], rtol=0, atol=1e-12)


def test_fresh_pairs_draw_anew_each_call_from_the_generator():
    x, augment = images(), views()
    g = draw_generator(0, "training", x.device)
    first, second = fresh_pair(augment, x, 0.0, g), fresh_pair(augment, x, 0.0, g)
    assert not torch.equal(first[1], second[1])
    with pytest.raises(ValueError, match="generator"):
        fresh_pair(augment, x, 0.0, None)


def test_draw_generators_differ_by_seed_and_use():
    def first_number(seed: int, use: str) -> float:
        return float(torch.rand(1, generator=draw_generator(seed, use, torch.device("cpu"))))

    numbers = {first_number(seed, use) for seed in (0, 1) for use in ("training", "saliency", "metrics")}
    assert len(numbers) == 6
    assert first_number(0, "training") == first_number(0, "training")


def test_saliency_through_a_fixed_draw_does_not_depend_on_chunking():
    from benchsuite.engine.pipeline import PairSimilarity

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.Tanh(), torch.nn.Flatten()).double()

    class Method:
        def embed(self, x: Tensor) -> Tensor:
            return encoder(x)

    x = images(n=5)
    objective = PairSimilarity(Method(), FixedPair(views(), x, 30.0, generator(1)))
    found = default_registry().get("saliency_methods", "smoothgrad")
    maps = [found.factory(found.params(samples=4, chunk_size=c))(objective, x, generator(2)) for c in (3, 20)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-9, atol=1e-12)
    assert maps[0].shape == (5, SIZE, SIZE) and maps[0].sum() > 0


def test_blur_matches_a_single_image_blurred_alone():
    # kornia's blur with one sigma per image equals blurring each image by itself.
    x = images(n=3)
    augment = views(blur_sigma=2.0)
    sigma = torch.tensor([0.5, 0.0, 2.0], dtype=x.dtype)
    batch = augment._blur(x, sigma)
    assert torch.equal(batch[1], x[1])
    for i in (0, 2):
        alone = augment._blur(x[i : i + 1], sigma[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=1e-12)
    assert F.mse_loss(batch[2], x[2]) > F.mse_loss(batch[0], x[0]) > 0


# -- in a run


SUITE = """\
name: strength
data: {size: 16, eval_images: 4, examples: 1}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 20}}
theta: [0]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 2, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
augmentation: {plugin: random_views}
sweep: {augmentation.params.strength: [0.0, 1.0]}
saliency: {plugin: smoothgrad, params: {samples: 2}}
metrics: [mass_in_mask, final_loss, view_consistency]
"""


def run_suite(tmp_path, out: str, text: str = SUITE):
    from benchsuite.engine.runner import run_cells
    from benchsuite.engine.suite import load_suite
    from benchsuite.results.cube import open_cube

    path = tmp_path / "strength.yaml"
    path.write_text(text)
    summary = run_cells(load_suite(path, default_registry()), default_registry(), tmp_path / out, progress=False)
    return open_cube(summary.run_dir)


def test_a_strength_sweep_runs_and_strength_zero_at_theta_zero_has_identical_views(tmp_path):
    cube = run_suite(tmp_path, "first")
    identical = cube["identical_views"].squeeze(["theta", "method", "encoder", "dataset"])
    assert identical.sel(strength=0.0).all() and not identical.sel(strength=1.0).any()
    mass = cube["mass_in_mask"].sel(strength=1.0)
    assert np.isnan(cube["mass_in_mask"].sel(strength=0.0)).all() and np.isfinite(mass).all()
    consistency = cube["view_consistency"]
    np.testing.assert_allclose(consistency.sel(strength=0.0), 1.0, atol=1e-6)  # the same view twice
    assert (consistency.sel(strength=1.0) < 1 - 1e-4).all()
    # Reproducible: the same suite and seeds give the same numbers.
    again = run_suite(tmp_path, "again")
    for name in ("ssp_loss_step", "mass_in_mask", "view_consistency", "saliency_example"):
        np.testing.assert_array_equal(again[name].values, cube[name].values)


def test_stacked_cells_with_random_views_give_the_numbers_of_cells_trained_alone(tmp_path):
    text = SUITE.replace("theta: [0]", "theta: [0, 45]") + "executor: {plugin: local, params: {stack: STACK}}\n"
    alone = run_suite(tmp_path, "alone", text.replace("STACK", "1"))
    stacked = run_suite(tmp_path, "stacked", text.replace("STACK", "4"))
    assert (stacked["stack_size"] == 4).all()
    np.testing.assert_allclose(stacked["ssp_loss_step"].values, alone["ssp_loss_step"].values, rtol=1e-5, atol=1e-6)
    for name in ("mass_in_mask", "view_consistency", "saliency_example"):
        np.testing.assert_allclose(stacked[name].values, alone[name].values, rtol=1e-3, atol=1e-4)
