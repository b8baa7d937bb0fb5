"""Collapse metrics: SimSiam's std of the normalised embedding (against lightly) and RankMe (against scipy)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from lightly.utils.debug import std_of_l2_normalized

from benchsuite.api import MetricInputs, check_metric_output
from benchsuite.engine.registry import default_registry
from benchsuite.results.cube import BETTER, HIGHER, open_cube
from benchsuite.testing import check_metric
from benchsuite_plugins.metrics.collapse import effective_rank, embedding_std
from tests.conftest import component, metric_inputs
from tests.core.test_runner import TINY, run

metric = functools.partial(component, "metrics")


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def inputs(train_images: torch.Tensor, embed=None, represent=None) -> MetricInputs:
    """Held-out images that differ from the training images, so a metric that read them would show it."""
    return metric_inputs(
        images=torch.zeros(2, *train_images.shape[1:]), train_images=train_images, embed=embed, represent=represent
    )


@pytest.mark.parametrize("name", ["embedding_std", "effective_rank"])
def test_the_collapse_metrics_pass_the_metric_contract_and_say_higher_is_better(name):
    check_metric(name)
    assert metric(name).higher_is_better is True


@pytest.mark.parametrize(("n", "d"), [(7, 3), (64, 16), (5, 40)])
def test_embedding_std_is_lightlys_std_of_the_l2_normalised_embedding_times_sqrt_d(n, d):
    z = gaussian(n, d, seed=n)
    torch.testing.assert_close(embedding_std(z), std_of_l2_normalized(z) * math.sqrt(d))


def test_embedding_std_is_about_one_for_an_isotropic_embedding_and_zero_for_a_collapsed_one():
    # SimSiam's reference: a zero-mean isotropic Gaussian's normalised channels have std 1/sqrt(d).
    assert embedding_std(gaussian(20_000, 32)).item() == pytest.approx(1.0, abs=0.01)
    assert embedding_std(gaussian(1, 32).expand(50, 32) * torch.linspace(1, 3, 50)[:, None]).item() == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize(("n", "d"), [(40, 8), (6, 30), (100, 100)])
def test_effective_rank_is_the_exponential_of_scipys_entropy_of_the_singular_values(n, d):
    z = gaussian(n, d, seed=d) * torch.linspace(0.1, 2, d)  # unequal spread across channels
    sigma = np.linalg.svd(z.numpy(), compute_uv=False)
    assert effective_rank(z).item() == pytest.approx(math.exp(scipy.stats.entropy(sigma)), rel=1e-10)


def test_effective_rank_counts_equally_used_directions_and_is_one_on_a_line():
    # k orthogonal directions, each used with the same spread: exactly k.
    basis = torch.linalg.qr(gaussian(16, 16)).Q
    for k in (1, 3, 7):
        rows = torch.cat([basis[:k] * 2.0, -basis[:k] * 2.0])
        assert effective_rank(rows).item() == pytest.approx(k, rel=1e-10)
    line = torch.linspace(-1, 1, 30, dtype=torch.float64)[:, None] * gaussian(1, 16)
    assert effective_rank(line).item() == pytest.approx(1.0, rel=1e-10)
    assert effective_rank(torch.zeros(5, 4, dtype=torch.float64)).item() == 1.0  # every image on one point


def test_the_metrics_read_the_training_images_through_embed_and_represent_in_batches():
    train = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x.flatten(1) * torch.arange(1, 17, dtype=torch.float64)

    std = metric("embedding_std", batch_size=4)(inputs(train, embed=encode))
    assert seen == [4, 4, 2]
    torch.testing.assert_close(std, embedding_std(encode(train)))
    rank = metric("effective_rank", batch_size=4)(inputs(train, represent=encode))
    torch.testing.assert_close(rank, effective_rank(encode(train)))


def test_fewer_than_two_training_images_give_nan():
    one = torch.rand(1, 1, 4, 4)
    for name in ("embedding_std", "effective_rank"):
        value = metric(name)(inputs(one, embed=lambda x: x.flatten(1), represent=lambda x: x.flatten(1)))
        assert check_metric_output(metric(name), value, 2).isnan()


def test_a_run_records_both_per_cell_with_their_direction(tmp_path):
    text = TINY.replace("metrics: [dice, auroc, mass_in_mask, final_loss]", "metrics: [dice, embedding_std, effective_rank]")
    cube = open_cube(run(tmp_path, text).run_dir)
    for name in ("embedding_std", "effective_rank"):
        values = cube[name]
        assert "image" not in values.dims and values.attrs[BETTER] == HIGHER
        assert np.isfinite(values.values).all() and (values.values > 0).all()
    # The rank cannot exceed the representation's width (small_cnn's out_dim).
    encoder = default_registry().get("encoders", "small_cnn")
    width = encoder.factory(encoder.params(width=4), 1, 32).out_dim
    assert (cube["effective_rank"].values <= width + 1e-9).all()
