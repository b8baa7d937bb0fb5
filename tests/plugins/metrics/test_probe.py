"""The pair probe: a frozen-embedding logistic regression telling (x, R x) from (x, R x'), checked against scikit-learn."""

from __future__ import annotations

from collections.abc import Callable

import pydantic
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from benchsuite.api import MetricInputs
from benchsuite.engine.registry import default_registry
from benchsuite_plugins.metrics.probe import PairProbe, PairProbeParams, derangement
from tests.conftest import metric_inputs

SIZE = 16
Pair = tuple[torch.Tensor, torch.Tensor]


def quarter_turn(x: torch.Tensor) -> Pair:
    return x, torch.rot90(x, 1, dims=(-2, -1))


def no_rotation(x: torch.Tensor) -> Pair:
    return x, x


def noisy_quarter_turn(noise: float) -> Callable[[torch.Tensor], Pair]:
    """A quarter turn whose second view also gets fixed Gaussian pixel noise."""

    def augment(x: torch.Tensor) -> Pair:
        generator = torch.Generator().manual_seed(len(x))
        return x, torch.rot90(x, 1, dims=(-2, -1)) + noise * torch.randn(x.shape, generator=generator)

    return augment


def sorted_pixels(x: torch.Tensor) -> torch.Tensor:
    """Rotation-invariant: the multiset of pixel values."""
    return x.flatten(1).sort(dim=1).values


def top_half_sorted(x: torch.Tensor) -> torch.Tensor:
    """Partly rotation-invariant: a quarter turn keeps a quarter of the top half's pixels in it."""
    return sorted_pixels(x[:, :, : SIZE // 2])


def constant(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(x), 8)


def make_inputs(embed, augment=quarter_turn, *, n_train: int = 128, n_eval: int = 64, seed: int = 0) -> MetricInputs:
    generator = torch.Generator().manual_seed(100)
    train = torch.rand(n_train, 1, SIZE, SIZE, generator=generator)
    images = torch.rand(n_eval, 1, SIZE, SIZE, generator=generator)
    return metric_inputs(
        saliency=torch.zeros(n_eval, SIZE, SIZE),
        masks=torch.zeros(n_eval, SIZE, SIZE, dtype=torch.bool),
        images=images,
        epoch_loss=torch.zeros(1),
        theta=90.0,
        train_images=train,
        embed=embed,
        augment=augment,
        seed=seed,
        represent=embed,
        train_masks=torch.zeros(n_train, SIZE, SIZE, dtype=torch.bool),
    )


def probe(**params) -> PairProbe:
    return PairProbe(PairProbeParams(**params))


def test_pair_probe_is_registered_as_a_cell_metric():
    component = default_registry().get("metrics", "pair_probe")
    metric = component.factory(component.params())
    assert metric.scope == "cell"
    assert metric(make_inputs(sorted_pixels, n_train=16, n_eval=8)).shape == ()


@pytest.mark.parametrize("feature", ["diff_product", "cosine"])
def test_rotation_invariant_embedding_scores_one_at_ninety_degrees(feature):
    assert probe(feature=feature)(make_inputs(sorted_pixels)).item() == pytest.approx(1.0, abs=0.02)


def test_any_injective_embedding_scores_one_at_zero_degrees():
    # theta = 0: a positive pair is one embedding twice; raw pixels tell every image apart.
    assert probe()(make_inputs(lambda x: x.flatten(1), no_rotation)).item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("feature", ["diff_product", "cosine"])
def test_embedding_that_ignores_the_input_scores_one_half(feature):
    assert probe(feature=feature)(make_inputs(constant)).item() == 0.5


def test_same_seed_gives_the_same_accuracy():
    inputs = make_inputs(sorted_pixels, noisy_quarter_turn(0.1), seed=3)
    assert probe()(inputs).item() == probe()(inputs).item()


def test_seed_draws_the_negative_partners():
    first = derangement(50, torch.Generator().manual_seed(0))
    assert torch.equal(first, derangement(50, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, derangement(50, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_derangement_is_a_permutation_without_fixed_points(n):
    partner = derangement(n, torch.Generator().manual_seed(n))
    assert torch.equal(partner.sort().values, torch.arange(n))
    assert not (partner == torch.arange(n)).any()


def test_classifier_matches_scikit_learn_on_the_same_pair_features():
    weight_decay = 1e-2
    metric = probe(weight_decay=weight_decay, steps=500)
    inputs = make_inputs(sorted_pixels, noisy_quarter_turn(0.1))
    accuracy = metric(inputs).item()

    # The same pairs (same generator sequence) and standardisation, fitted by scikit-learn with
    # the equivalent penalty C = 1 / (weight_decay * n).
    generator = torch.Generator().manual_seed(inputs.seed)
    train_x, train_y = metric.pairs(inputs, inputs.train_images, generator)
    test_x, test_y = metric.pairs(inputs, inputs.images, generator)
    mean, std = train_x.mean(dim=0), train_x.std(dim=0)
    reference = LogisticRegression(C=1 / (weight_decay * len(train_x)), tol=1e-10, max_iter=10_000)
    reference.fit(((train_x - mean) / std).numpy(), train_y.numpy())
    expected = balanced_accuracy_score(test_y.numpy(), reference.predict(((test_x - mean) / std).numpy()))

    assert 0.6 < expected < 0.95  # a case where the classifier matters
    assert accuracy == pytest.approx(expected, abs=0.03)


def test_unrotated_negatives_reward_detecting_the_augmentation():
    # The noise on the second view alone separates (x, R x + noise) from (x, x'); with rotated
    # negatives both pairs carry it, and only matching images can be detected.
    inputs = make_inputs(sorted_pixels, noisy_quarter_turn(0.2))
    assert probe(negatives="unrotated")(inputs).item() > 0.95
    assert probe(negatives="rotated")(inputs).item() < 0.75


def test_embedding_in_small_batches_gives_the_same_accuracy():
    inputs = make_inputs(top_half_sorted)
    accuracy = probe(embed_batch_size=1000)(inputs).item()
    assert 0.55 < accuracy < 0.95
    assert probe(embed_batch_size=7)(inputs).item() == accuracy


def test_probe_fits_when_called_without_gradients():
    inputs = make_inputs(sorted_pixels, noisy_quarter_turn(0.1))
    with torch.no_grad():
        accuracy = probe()(inputs).item()
    assert accuracy == probe()(inputs).item()


def test_split_of_one_image_gives_nan():
    assert probe()(make_inputs(sorted_pixels, n_eval=1)).isnan()


@pytest.mark.parametrize("params", [{"feature": "concat"}, {"steps": 0}, {"weight_decay": -1.0}, {"negatives": "none"}])
def test_invalid_params_are_refused(params):
    with pytest.raises(pydantic.ValidationError):
        PairProbeParams(**params)
